import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def small_image():
    """A 1,500-file synthetic image and its merged tree, for the equality tests of the replay
    shortcuts on the built-in distinct-path workloads (read only: runs never change them)."""
    from simulator.imagetree import ImageTree
    from simulator.inputs import load_image

    image = load_image("synthetic:layers=6,files=1500")
    return image, ImageTree.build(image)
