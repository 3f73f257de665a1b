"""`segkit demo`: the main job end to end on generated data."""
from __future__ import annotations

import click


@click.command("demo", epilog="Example:\n\n  segkit demo --out demo_out --n 16 --size 512")
@click.option("--out", default="demo_out", show_default=True, help="Output folder.")
@click.option("--n", "n", default=16, show_default=True, help="Number of generated masks.")
@click.option("--size", default=512, show_default=True, help="Mask side in pixels.")
@click.option("--seed", default=0, show_default=True, help="Random seed of the generated data.")
def command(out, n, size, seed):
    """Run the main job end to end on generated data (no downloads)."""
    from segkit import demo

    demo.run(out, n=n, size=size, seed=seed)
