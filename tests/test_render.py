import multiprocessing
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from hf_maskdp.anonymize.body import JOINT, Mesh, make_body_model
from hf_maskdp.anonymize.render import Camera, MeshRenderer

WIDTH, HEIGHT = 64, 48
K = np.array([[50.0, 0, 30.0], [0, 55.0, 22.0], [0, 0, 1]])
IDENTITY_CAMERA = Camera(K=K, R=np.eye(3), t=np.zeros(3), width=WIDTH, height=HEIGHT)


def quad(u0, u1, v0, v1, depth, color=(0.5, 0.5, 0.5), camera=IDENTITY_CAMERA):
    """A rectangle facing the identity camera that projects exactly onto pixels [u0,u1]x[v0,v1]."""
    corners = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], np.float64)
    rays = np.c_[corners, np.ones(4)] @ np.linalg.inv(camera.K).T
    vertices = rays * depth
    return Mesh(vertices, [[0, 1, 2], [0, 2, 3]], np.tile(color, (4, 1)))


@pytest.fixture(scope="module")
def renderer():
    return MeshRenderer(WIDTH, HEIGHT, supersample=4)


def test_coverage_is_one_inside_zero_outside_fractional_at_edges(renderer):
    # pixel u spans [u - 0.5, u + 0.5]: edges at .25 leave quarter-covered border pixels
    out = renderer.render([quad(10.25, 30.75, 5.0, 20.0, depth=2.0)], IDENTITY_CAMERA)
    assert out.rgb.shape == (HEIGHT, WIDTH, 3) and out.rgb.dtype == np.uint8
    assert out.coverage.dtype == np.float32 and out.depth.dtype == np.float32 and out.person_index.dtype == np.int16
    np.testing.assert_array_equal(out.coverage[6:20, 11:31], 1.0)
    outside = np.ones_like(out.coverage, bool)
    outside[5:21, 10:32] = False
    np.testing.assert_array_equal(out.coverage[outside], 0.0)
    np.testing.assert_allclose(out.coverage[6:20, 10], 0.25)  # left edge at 10.25 covers 1/4 of pixel 10
    np.testing.assert_allclose(out.coverage[6:20, 31], 0.25)
    np.testing.assert_allclose(out.coverage[5, 11:31], 0.5)  # top edge through pixel centres
    assert 0 < out.coverage[5, 10] < 0.25
    np.testing.assert_allclose(out.coverage.sum(), (30.75 - 10.25) * (20.0 - 5.0), rtol=0.01)
    # empty pixels: depth inf, index -1, black; covered pixels: index 0, depth = camera z
    assert np.isinf(out.depth[outside]).all() and (out.person_index[outside] == -1).all()
    assert (out.rgb[outside] == 0).all()
    np.testing.assert_allclose(out.depth[out.coverage > 0], 2.0, rtol=1e-5)
    assert (out.person_index[out.coverage > 0] == 0).all()


def test_nearer_mesh_wins_whatever_the_order(renderer):
    red = quad(5, 40, 5, 30, depth=3.0, color=(1, 0, 0))
    blue = quad(20, 55, 15, 40, depth=1.5, color=(0, 0, 1))
    for meshes, blue_index in (([red, blue], 1), ([blue, red], 0)):
        out = renderer.render(meshes, IDENTITY_CAMERA)
        overlap = (slice(16, 30), slice(21, 40))
        np.testing.assert_array_equal(out.person_index[overlap], blue_index)
        np.testing.assert_allclose(out.depth[overlap], 1.5, rtol=1e-5)
        assert (out.rgb[overlap][..., 2] > 100).all() and (out.rgb[overlap][..., 0] == 0).all()
        red_only = (slice(6, 14), slice(6, 19))
        np.testing.assert_array_equal(out.person_index[red_only], 1 - blue_index)
        np.testing.assert_allclose(out.depth[red_only], 3.0, rtol=1e-5)


def test_a_rendered_joint_lands_where_the_pinhole_model_says():
    body = make_body_model(seed=0)
    mesh, joints = body.pose(np.zeros((21, 3)), transl=[0.1, 0.2, 0.0])
    camera = Camera.look_at(eye=[1.0, 0.3, 3.5], target=[0.0, -0.3, 0.0], width=160, height=120, fov_y_degrees=50)
    camera.K[0, 0] *= 1.1  # non-square pixels and an off-centre principal point
    camera.K[:2, 2] += [7.0, -4.0]
    wrist = joints[JOINT["left_wrist"]]
    marker = _sphere(wrist, radius=0.03)
    out = MeshRenderer(160, 120, supersample=3).render([marker], camera)
    v, u = np.nonzero(out.coverage)
    weights = out.coverage[v, u]
    centroid = np.array([(u * weights).sum(), (v * weights).sum()]) / weights.sum()
    expected = camera.K @ (camera.R @ wrist + camera.t)
    np.testing.assert_allclose(centroid, expected[:2] / expected[2], atol=0.25)
    np.testing.assert_allclose(camera.project(wrist[None])[0], expected[:2] / expected[2])
    # the marker's depth is its camera z, within its radius
    z = (camera.R @ wrist + camera.t)[2]
    assert z - 0.031 < out.depth[out.coverage > 0].min() < z


def _sphere(centre, radius, steps=24):
    theta, phi = np.meshgrid(np.linspace(0, np.pi, steps), np.linspace(0, 2 * np.pi, steps), indexing="ij")
    points = np.stack([np.sin(theta) * np.cos(phi), np.cos(theta), np.sin(theta) * np.sin(phi)], -1).reshape(-1, 3)
    faces = []
    for i in range(steps - 1):
        for j in range(steps - 1):
            a, b, c, d = i * steps + j, i * steps + j + 1, (i + 1) * steps + j, (i + 1) * steps + j + 1
            faces += [[a, b, d], [a, d, c]]
    return Mesh(points * radius + centre, faces, np.ones_like(points))


def test_look_at_puts_the_target_in_the_centre_and_up_at_the_top():
    camera = Camera.look_at(eye=[2, 1, 4], target=[0, 0.5, 0], width=100, height=80)
    target, above, left = camera.project(np.array([[0, 0.5, 0], [0, 1.0, 0], [-0.3, 0.5, 0.0]]))
    np.testing.assert_allclose(target, [49.5, 39.5], atol=1e-9)
    assert above[1] < target[1]  # world up = image up (smaller v)
    assert left[0] < target[0]
    np.testing.assert_allclose(camera.R @ camera.R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(camera.R) > 0


def test_body_render_and_composite():
    body = make_body_model(seed=4)
    mesh, _ = body.pose(np.zeros((21, 3)))
    camera = Camera.look_at(eye=[0, -0.3, 3.0], target=[0, -0.4, 0], width=96, height=96)
    out = MeshRenderer(96, 96).render([mesh], camera)
    assert 0.1 < (out.coverage > 0).mean() < 0.6
    background = np.full((96, 96, 3), 40, np.uint8)
    composite = out.over(background)
    np.testing.assert_array_equal(composite[out.coverage == 0], background[out.coverage == 0])
    np.testing.assert_array_equal(composite[out.coverage == 1], out.rgb[out.coverage == 1])


def _render_in_child(payload):
    renderer, mesh = pickle.loads(payload)
    return renderer.render([mesh], IDENTITY_CAMERA).coverage


def test_one_renderer_per_worker_process(renderer):
    mesh = quad(10.25, 30.75, 5.0, 20.0, depth=2.0)
    expected = renderer.render([mesh], IDENTITY_CAMERA).coverage  # parent has a live context
    for method in ("fork", "spawn"):
        with multiprocessing.get_context(method).Pool(1) as pool:
            np.testing.assert_array_equal(pool.apply(_render_in_child, (pickle.dumps((renderer, mesh)),)), expected)
    np.testing.assert_array_equal(renderer.render([mesh], IDENTITY_CAMERA).coverage, expected)


def test_bad_input_is_a_clear_error(renderer):
    with pytest.raises(ValueError, match="make a MeshRenderer of the camera's size"):
        renderer.render([], Camera(K=K, R=np.eye(3), t=np.zeros(3), width=10, height=10))
    with pytest.raises(ValueError, match="positive size"):
        MeshRenderer(0, 10)
    empty = renderer.render([], IDENTITY_CAMERA)
    assert (empty.coverage == 0).all() and np.isinf(empty.depth).all() and (empty.person_index == -1).all()


def test_missing_egl_is_a_clear_error():
    # a real failure: libglvnd finds no EGL vendor library, as on a machine without Mesa's EGL
    code = (
        "import numpy as np\n"
        "from hf_maskdp.anonymize.render import Camera, MeshRenderer\n"
        "MeshRenderer(8, 8).render([], Camera(np.eye(3), np.eye(3), np.zeros(3), 8, 8))\n"
    )
    env = {**os.environ, "__EGL_VENDOR_LIBRARY_FILENAMES": "/nonexistent/egl_vendor.json"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "could not create an offscreen EGL context" in result.stderr
    assert "apt-get install -y libegl1 libegl-mesa0 libgl1-mesa-dri" in result.stderr
