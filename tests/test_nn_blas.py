"""distnet.nn.blas: the accumulating, strided GEMM behind the direct convolution, against
np.matmul, and its refusals."""
import numpy as np
import pytest

from distnet.nn import blas

RNG = np.random.default_rng(3)

pytestmark = pytest.mark.skipif(not blas.available(np.float32), reason="no OpenBLAS found beside NumPy")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_on_strided_views_adds_into_its_output(dtype, beta, trans_b):
    """Row-pitched views of larger arrays (what the direct convolution hands over), and
    beta, which np.matmul cannot do; the parts of the arrays outside the views stay."""
    big_a = RNG.standard_normal((9, 20)).astype(dtype)
    big_b = RNG.standard_normal((12, 30)).astype(dtype)
    big_c = RNG.standard_normal((8, 25)).astype(dtype)
    a = big_a[1:6, 3:10]                                   # 5 x 7, pitch 20
    b = big_b[2:8, 4:11] if trans_b else big_b[1:8, 5:11]  # 6 x 7 (used as 7 x 6) or 7 x 6
    c = big_c[2:7, 1:7]                                    # 5 x 6, pitch 25
    before = big_c.copy()
    want = a.astype(np.float64) @ (b.T if trans_b else b).astype(np.float64) + beta * c
    blas.gemm_arrays(a, b, c, beta=beta, trans_b=trans_b)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol)
    outside = np.ones(big_c.shape, bool)
    outside[2:7, 1:7] = False
    np.testing.assert_array_equal(big_c[outside], before[outside])


def test_gemm_refuses_what_it_cannot_do():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        blas.gemm_arrays(a, np.ones((4, 2), np.float32), np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        blas.gemm_arrays(a, np.ones((3, 2), np.float64), np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="unit column stride"):
        blas.gemm_arrays(a, np.ones((3, 4), np.float32)[:, ::2], np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        blas.gemm_arrays(a.astype(np.int32), np.ones((3, 2), np.int32), np.ones((2, 2), np.int32))


def test_distnet_direct_conv_0_turns_the_direct_path_off(tmp_path):
    """The environment switch: a fresh interpreter with DISTNET_DIRECT_CONV=0 finds no BLAS,
    so every conv takes the im2col path."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, DISTNET_DIRECT_CONV="0")
    out = subprocess.run([sys.executable, "-c", "import numpy as np; from distnet.nn import blas; "
                          "print(blas.available(np.float32))"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
