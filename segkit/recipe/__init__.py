"""`segkit recipe`: the whole recipe on a user's dataset, from images and masks to a report."""
