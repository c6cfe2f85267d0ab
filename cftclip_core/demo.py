"""The bundled demo dataset: real free-licence photos with short news-style texts."""

from pathlib import Path

DEMO_DIR = Path(__file__).parent / "demo_data"


def demo_table_path() -> Path:
    return DEMO_DIR / "demo.csv"
