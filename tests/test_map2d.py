import base64
import struct

import numpy as np
import pytest

from clado.taxonomy.map2d import map_png_base64, project_2d, render_map_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def unit_rows(n: int, dims: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(n, dims)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_render_map_png_writes_a_1000x700_png(tmp_path):
    xy = np.random.default_rng(0).normal(size=(60, 2))
    groups = ["billing and refunds for cancelled subscriptions abroad"] * 25 + ["login"] * 20 + [None] * 15
    path = render_map_png(xy, groups, tmp_path / "out" / "map.png", title="test map")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])  # IHDR chunk
    assert (width, height) == (1000, 700)
    assert base64.b64decode(map_png_base64(path)) == data


def test_render_map_png_rejects_misaligned_groups(tmp_path):
    with pytest.raises(ValueError, match="3 points but groups has 2"):
        render_map_png(np.zeros((3, 2)), ["a", "b"], tmp_path / "map.png", title="t")


def test_project_2d_small_input_uses_pca():
    X = unit_rows(6, 8, seed=1)
    xy = project_2d(X)
    assert xy.shape == (6, 2)
    assert np.allclose(xy.mean(axis=0), 0, atol=1e-5)  # PCA output is centred
    assert np.array_equal(project_2d(X[:1]), np.zeros((1, 2)))


@pytest.mark.slow  # UMAP's first call compiles with numba (~14 s)
def test_project_2d_umap_is_deterministic():
    X = unit_rows(40, 8, seed=2)
    xy = project_2d(X, seed=3)
    assert xy.shape == (40, 2)
    assert np.isfinite(xy).all()
    assert np.array_equal(xy, project_2d(X, seed=3))
