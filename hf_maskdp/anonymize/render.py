"""Offscreen CPU rendering of avatar meshes with moderngl (EGL, Mesa llvmpipe).

Conventions (OpenCV): camera x right, y down, z forward; world -> camera is
`x_c = R @ x_w + t`; pixel `(u, v)` has its centre at integer coordinates, so a point
projects to `u = fx * x_c / z_c + cx` (plus skew), `v = fy * y_c / z_c + cy`.

Antialiasing is plain supersampling: each output pixel averages `supersample**2`
sub-pixel samples, which gives a coverage fraction at edges for free. `rgb` is straight
(not premultiplied) colour; composite it with `RenderOutput.over(background)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from hf_maskdp.anonymize.body import Mesh

_EGL_HELP = (
    "moderngl could not create an offscreen EGL context. Install the EGL and Mesa packages "
    "(apt-get install -y libegl1 libegl-mesa0 libgl1-mesa-dri) and moderngl (pip install moderngl)."
)

_VERTEX_SHADER = """
#version 330
uniform mat4 mvp;       // world -> clip (pinhole K, OpenCV axes)
uniform mat4 world_to_camera;
in vec3 in_position;
in vec3 in_normal;
in vec3 in_color;
in float in_person;
out vec3 v_normal;
out vec3 v_color;
out float v_depth;
flat out float v_person;
void main() {
    gl_Position = mvp * vec4(in_position, 1.0);
    v_normal = mat3(world_to_camera) * in_normal;
    v_color = in_color;
    v_depth = gl_Position.w;  // camera z in metres
    v_person = in_person;
}
"""

# Lambert shading with a headlight plus a fixed key light from above; two-sided so that
# meshes with inconsistent winding still shade correctly.
_FRAGMENT_SHADER = """
#version 330
in vec3 v_normal;
in vec3 v_color;
in float v_depth;
flat in float v_person;
layout(location = 0) out vec4 out_color;
layout(location = 1) out vec2 out_depth_person;
void main() {
    vec3 n = normalize(v_normal);
    if (n.z > 0.0) n = -n;  // face the camera (camera looks along +z)
    float headlight = max(dot(n, vec3(0.0, 0.0, -1.0)), 0.0);
    float key = max(dot(n, normalize(vec3(0.3, -1.0, -0.6))), 0.0);
    float shade = 0.35 + 0.45 * headlight + 0.3 * key;
    out_color = vec4(clamp(v_color * shade, 0.0, 1.0), 1.0);
    out_depth_person = vec2(v_depth, v_person + 1.0);
}
"""

# One triangle that covers the screen; the resolve pass runs once per output pixel.
_FULLSCREEN_SHADER = """
#version 330
void main() {
    vec2 corner = vec2((gl_VertexID << 1) & 2, gl_VertexID & 2);
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}
"""

# Output pixel = mean colour of its covered samples, coverage = covered fraction, and the
# depth and mesh index of its nearest sample.
_RESOLVE_SHADER = """
#version 330
uniform sampler2D color_samples;
uniform sampler2D depth_person_samples;
uniform int samples;
layout(location = 0) out vec4 out_color_coverage;
layout(location = 1) out vec2 out_depth_person;
void main() {
    ivec2 pixel = ivec2(gl_FragCoord.xy);
    vec3 color_sum = vec3(0.0);
    float covered = 0.0;
    vec2 nearest = vec2(0.0, 0.0);
    for (int i = 0; i < samples; ++i) {
        for (int j = 0; j < samples; ++j) {
            ivec2 sample_position = pixel * samples + ivec2(i, j);
            vec4 color = texelFetch(color_samples, sample_position, 0);
            vec2 depth_person = texelFetch(depth_person_samples, sample_position, 0).xy;
            if (color.a > 0.5) {
                color_sum += color.rgb;
                if (covered == 0.0 || depth_person.x < nearest.x) nearest = depth_person;
                covered += 1.0;
            }
        }
    }
    out_color_coverage = vec4(color_sum / max(covered, 1.0), covered / float(samples * samples));
    out_depth_person = nearest;
}
"""


# Mesa llvmpipe rasterizes on a thread pool that does not survive fork(): a forked worker
# (datasets.map(num_proc=...)) of a process that already rendered would hang on its first
# frame. With LP_NUM_THREADS=0 llvmpipe renders on the calling thread and forks safely;
# it must be set before the first context of the process exists.
_CONTEXT_PROCESS = {"pid": None}


def _check_fork_safe():
    os.environ.setdefault("LP_NUM_THREADS", "0")
    parent = _CONTEXT_PROCESS["pid"]
    if parent not in (None, os.getpid()) and os.environ["LP_NUM_THREADS"] != "0":
        raise RuntimeError(
            f"this process was forked from process {parent}, which already rendered with "
            f"LP_NUM_THREADS={os.environ['LP_NUM_THREADS']}; Mesa llvmpipe would hang here. "
            "Unset LP_NUM_THREADS (or set it to 0), or start workers with the 'spawn' method."
        )


@dataclass
class Camera:
    """A pinhole camera in OpenCV convention: `x_c = R @ x_w + t`, pixels via `K`."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int

    def __post_init__(self):
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)
        self.width, self.height = int(self.width), int(self.height)

    @classmethod
    def look_at(cls, eye, target, width, height, fov_y_degrees=45.0, up=(0.0, 1.0, 0.0)) -> Camera:
        """A camera at `eye` looking at `target`, with world `up` pointing up in the image."""
        eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
        forward = target - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, up)  # image x; y = forward x right points down
        if np.linalg.norm(right) < 1e-8:
            raise ValueError("look_at: `up` is parallel to the viewing direction; pick another `up`.")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        R = np.stack([right, down, forward])
        focal = 0.5 * height / np.tan(np.radians(fov_y_degrees) / 2)
        K = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
        return cls(K=K, R=R, t=-R @ eye, width=width, height=height)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> pixel coordinates (N, 2)."""
        camera_points = np.asarray(points, dtype=np.float64) @ self.R.T + self.t
        pixels = camera_points @ self.K.T
        return pixels[:, :2] / pixels[:, 2:3]


@dataclass
class RenderOutput:
    rgb: np.ndarray  # uint8 (H, W, 3), straight colour, black where empty
    depth: np.ndarray  # float32 (H, W) camera z of the nearest surface, inf where empty
    coverage: np.ndarray  # float32 (H, W) in [0, 1]: fraction of the pixel covered by any mesh
    person_index: np.ndarray  # int16 (H, W): index into `meshes` of the nearest mesh, -1 where empty

    def over(self, background: np.ndarray) -> np.ndarray:
        """Alpha-composite the render over a uint8 (H, W, 3) background, using coverage."""
        alpha = self.coverage[..., None]
        out = self.rgb * alpha + np.asarray(background, dtype=np.float32) * (1.0 - alpha)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (bincount is much faster than np.add.at)."""
    corners = vertices[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    flat_faces = faces.reshape(-1)
    normals = np.stack(
        [np.bincount(flat_faces, np.repeat(face_normals[:, k], 3), minlength=len(vertices)) for k in range(3)],
        axis=1,
    )
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


class MeshRenderer:
    """Renders meshes to colour, depth, coverage and per-pixel mesh index.

    One GL context per renderer and per process: the context is created lazily and
    recreated after a fork, and the renderer pickles without it, so it can be shipped
    to `datasets.map(num_proc=...)` workers.
    """

    def __init__(self, width: int, height: int, supersample: int = 3, near: float = 0.05, far: float = 100.0):
        if width < 1 or height < 1:
            raise ValueError(f"MeshRenderer needs a positive size, got {width}x{height}.")
        if supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {supersample}.")
        self.width, self.height, self.supersample = int(width), int(height), int(supersample)
        self.near, self.far = float(near), float(far)
        self._gl = None
        self._pid = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_gl"] = state["_pid"] = None
        return state

    def _context(self):
        if self._gl is None or self._pid != os.getpid():
            try:
                import moderngl
            except ImportError as error:
                raise ImportError(_EGL_HELP) from error
            _check_fork_safe()
            try:
                ctx = moderngl.create_standalone_context(backend="egl")
            except Exception as error:  # moderngl raises plain Exception for EGL failures
                raise RuntimeError(f"{_EGL_HELP} ({error})") from error
            program = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
            resolve = ctx.program(vertex_shader=_FULLSCREEN_SHADER, fragment_shader=_RESOLVE_SHADER)
            resolve["samples"] = self.supersample
            resolve["color_samples"] = 0
            resolve["depth_person_samples"] = 1
            size = (self.width * self.supersample, self.height * self.supersample)
            framebuffer = ctx.framebuffer(
                color_attachments=[ctx.texture(size, 4, dtype="f1"), ctx.texture(size, 2, dtype="f4")],
                depth_attachment=ctx.depth_renderbuffer(size),
            )
            size = (self.width, self.height)
            output = ctx.framebuffer(
                color_attachments=[ctx.texture(size, 4, dtype="f4"), ctx.texture(size, 2, dtype="f4")]
            )
            self._gl = (ctx, program, resolve, framebuffer, output)
            self._pid = _CONTEXT_PROCESS["pid"] = os.getpid()
        return self._gl

    def _projection(self, camera: Camera) -> np.ndarray:
        """OpenCV K -> GL clip matrix for the supersampled image (row v = GL row v, no flip)."""
        s = self.supersample
        width, height = self.width * s, self.height * s
        (fx, skew, cx), (_, fy, cy) = camera.K[0], camera.K[1]
        # sub-pixel centres of pixel u sit at s*(u + 0.5) - 0.5 in supersampled pixels
        fx, skew, fy = s * fx, s * skew, s * fy
        cx, cy = s * (cx + 0.5) - 0.5, s * (cy + 0.5) - 0.5
        n, f = self.near, self.far
        return np.array(
            [
                [2 * fx / width, 2 * skew / width, 2 * (cx + 0.5) / width - 1, 0],
                [0, 2 * fy / height, 2 * (cy + 0.5) / height - 1, 0],
                [0, 0, (f + n) / (f - n), -2 * f * n / (f - n)],
                [0, 0, 1, 0],
            ]
        )

    def render(self, meshes: list[Mesh], camera: Camera) -> RenderOutput:
        if (camera.width, camera.height) != (self.width, self.height):
            raise ValueError(
                f"camera is {camera.width}x{camera.height} but the renderer is {self.width}x{self.height}; "
                "make a MeshRenderer of the camera's size."
            )
        ctx, program, resolve, framebuffer, output = self._context()
        with ctx:  # make this renderer's context current: several renderers may share a thread
            framebuffer.use()
            framebuffer.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
            if meshes:
                self._draw(ctx, program, meshes, camera)
            return self._resolve(ctx, resolve, framebuffer, output)

    def _draw(self, ctx, program, meshes, camera):
        ctx.enable(ctx.DEPTH_TEST)
        ctx.disable(ctx.CULL_FACE)
        world_to_camera = np.eye(4)
        world_to_camera[:3, :3], world_to_camera[:3, 3] = camera.R, camera.t
        mvp = self._projection(camera) @ world_to_camera
        program["mvp"].write(mvp.T.astype("f4").tobytes())  # GL matrices are column-major
        program["world_to_camera"].write(world_to_camera.T.astype("f4").tobytes())
        vertex_data, index_data, offset = [], [], 0
        for person, mesh in enumerate(meshes):
            normals = vertex_normals(mesh.vertices, mesh.faces.astype(np.int64))
            person_column = np.full((len(mesh.vertices), 1), person, np.float32)
            vertex_data.append(np.hstack([mesh.vertices, normals, mesh.vertex_colors, person_column]))
            index_data.append(mesh.faces + offset)
            offset += len(mesh.vertices)
        vbo = ctx.buffer(np.concatenate(vertex_data).astype("f4").tobytes())
        ibo = ctx.buffer(np.concatenate(index_data).astype("i4").tobytes())
        vao = ctx.vertex_array(
            program, [(vbo, "3f 3f 3f 1f", "in_position", "in_normal", "in_color", "in_person")], ibo
        )
        vao.render()
        for gl_object in (vao, vbo, ibo):
            gl_object.release()

    def _resolve(self, ctx, resolve, framebuffer, output) -> RenderOutput:
        # average the supersampled samples on the GL side: far less data to read back
        output.use()
        framebuffer.color_attachments[0].use(location=0)
        framebuffer.color_attachments[1].use(location=1)
        ctx.disable(ctx.DEPTH_TEST)
        fullscreen = ctx.vertex_array(resolve, [])
        fullscreen.render(vertices=3)
        fullscreen.release()
        shape = (self.height, self.width)
        rgba = np.frombuffer(output.read(components=4, attachment=0, dtype="f4"), np.float32).reshape(*shape, 4)
        extra = np.frombuffer(output.read(components=2, attachment=1, dtype="f4"), np.float32).reshape(*shape, 2)
        coverage = rgba[..., 3].copy()
        empty = coverage == 0
        return RenderOutput(
            rgb=np.clip(np.rint(rgba[..., :3] * 255), 0, 255).astype(np.uint8),
            depth=np.where(empty, np.inf, extra[..., 0]).astype(np.float32),
            coverage=coverage,
            person_index=np.rint(extra[..., 1]).astype(np.int16) - 1,
        )
