"""Reading and writing: masks, images, COCO, confidence stores, submissions (atomically)."""
