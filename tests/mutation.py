"""Mutation check: plant known faults, one at a time, in a temporary copy of the repository and run the tests that
claim to rule each one out; every fault must make them fail.

A :class:`Fault` is ``(id, file, exact original snippet, replacement, test selection)``. Before anything is planted,
every snippet must occur exactly once in its file; a snippet that does not (the code moved on) is a *stale* fault
and the run stops, naming it: re-target it by editing :data:`FAULTS`. The working tree is never modified: the
repository's files (tracked and untracked, not ignored) are copied to a temporary directory, each fault is written
into the copy, its tests run there (``python -m pytest -x -q``), and the file is restored.

Before the faults, each test selection runs once on the unmodified copy (grouped per test file) and must pass, so
that a failure under a fault is the fault's doing.

This module is dev tooling: it lives under ``tests/`` (not in the ``yolo_attn`` package) and is wrapped by
``scripts/mutate.py``. ``tests/test_mutation_table.py`` checks, cheaply, that the table parses and every snippet is
found.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Fault:
    """One planted fault.

    Attributes:
        id: Short unique name (``area-what``).
        file: Repository-relative path of the file to change.
        original: Exact snippet of today's code; must occur exactly once in ``file``.
        replacement: What the snippet becomes.
        select: pytest path or node id (``tests/test_x.py`` or ``tests/test_x.py::test_y``) of the catching tests.
        k: Optional ``-k`` expression narrowing ``select``.
        what: One line: the mistake this fault stands for.
    """

    id: str
    file: str
    original: str
    replacement: str
    select: str
    k: str = ""
    what: str = ""

    def pytest_args(self) -> list[str]:
        """Arguments after ``python -m pytest``."""
        return [*_SELECT_FLAGS, self.select, *(["-k", self.k] if self.k else [])]

    def shown(self) -> str:
        """The selection as one short string for the report."""
        return self.select + (f" -k '{self.k}'" if self.k else "")


_SELECT_FLAGS = ["-x", "-q", "-p", "no:cacheprovider", "-W", "ignore"]
ATTEND = "tests/test_attend.py::test_fast_path_matches_reference"
REL = "tests/test_attend.py::test_rel_pos_bias_matches_reference"
PATTERNS = "tests/test_patterns.py"
LEARNED = "tests/test_learned_attention.py"
POSENC = "tests/test_posenc.py"
BAD = "tests/test_bad_inputs.py"
EXPORT = "tests/test_export_configs.py"
TILING, PAT, FUNC = "yolo_attn/attention/tiling.py", "yolo_attn/attention/patterns.py", "yolo_attn/attention/functional.py"
CLUSTER, SINK, POS = "yolo_attn/attention/cluster.py", "yolo_attn/attention/sinkhorn.py", "yolo_attn/attention/posenc.py"

FAULTS: tuple[Fault, ...] = (
    # ---- tiled executor: tile borders and home indices (attention/tiling.py)
    Fault("tile-home-slot", TILING,
          "home = ((p % d) * n_tiles + (p // d) // t) * t + (p // d) % t",
          "home = ((p % d) * n_tiles + (p // d) // t) * t + (p // d + 1) % t",
          ATTEND, "local3 and 13x10", "neighbourhood token reads its output from the next slot of its tile"),
    Fault("tile-keys-one-short", TILING,
          "r_len = min(t + min(window, sub_max) - 1, sub_max)",
          "r_len = min(t + min(window, sub_max) - 2, sub_max)",
          ATTEND, "local3 and 13x10", "tile key span one key too short at the tile border"),
    Fault("tile-window-home-unshifted", TILING,
          "return _axis_plan(pos, torch.arange(length) + s, pos, ok, pred)",
          "return _axis_plan(pos, torch.arange(length), pos, ok, pred)",
          ATTEND, "swin and 13x10", "shifted-window home slot ignores the shift"),
    Fault("tile-band-start", TILING,
          "ks = (q[:, :1] - reach).clamp(0, length - r_len)",
          "ks = (q[:, :1] - reach + 1).clamp(0, length - r_len)",
          ATTEND, "local1d and 13x10", "1-D band tile starts one key late"),
    Fault("tile-2d-home-transposed", TILING,
          "home = (((ry // tr) * n_tc + cx // tc) * tr + ry % tr) * tc + cx % tc",
          "home = (((ry // tr) * n_tc + cx // tc) * tr + cx % tr) * tc + ry % tc",
          ATTEND, "local3 and 8x8", "2-D home slot with row and column swapped inside the tile"),
    # ---- relative position bias indices (tiling.py, functional.py)
    Fault("relbias-tile-sign", TILING,
          "dy = (self.rows.q_pos[:, :, None] - self.rows.k_pos[:, None, :])",
          "dy = (self.rows.k_pos[:, None, :] - self.rows.q_pos[:, :, None])",
          REL, "local3 and 5x7", "tiled relative bias uses y_k - y_q"),
    Fault("relbias-tile-stride", TILING,
          "idx = dy[:, None, :, None, :, None] * (2 * b - 1) + dx[None, :, None, :, None, :]",
          "idx = dy[:, None, :, None, :, None] * (2 * a - 1) + dx[None, :, None, :, None, :]",
          REL, "window and 5x7", "tiled relative bias flattens the table with the wrong row stride"),
    Fault("relbias-dense-sign", FUNC,
          "dy = (t[:, None] // w - t[None, :] // w).clamp(1 - a, a - 1) + a - 1",
          "dy = (t[None, :] // w - t[:, None] // w).clamp(1 - a, a - 1) + a - 1",
          POSENC, "relative_bias", "dense relative bias uses y_k - y_q"),
    Fault("relbias-dense-clip", FUNC,
          "dx = (t[:, None] % w - t[None, :] % w).clamp(1 - b, b - 1) + b - 1",
          "dx = (t[:, None] % w - t[None, :] % w).clamp(2 - b, b - 1) + b - 1",
          POSENC, "relative_bias", "dense relative bias clips negative x offsets one step early"),
    Fault("relbias-mixed-head-slice", FUNC,
          "table = None if rel_pos_bias is None else rel_pos_bias[part]",
          "table = None if rel_pos_bias is None else rel_pos_bias[:count]",
          REL, "mixed and 5x7", "mixed attention hands every group the first heads' bias tables"),
    # ---- masks: the specification (patterns.py) and the fast paths that share its predicates
    Fault("mask-even-window-side", PAT,
          "start = torch.minimum((pq // dilation - k // 2).clamp(min=0), sub_len - k)",
          "start = torch.minimum((pq // dilation - (k - 1) // 2).clamp(min=0), sub_len - k)",
          ATTEND, "local4 and 13x10", "even window reaches k/2 - 1 before the query instead of k/2"),
    Fault("mask-border", PAT,
          "start = torch.minimum((pq // dilation - k // 2).clamp(min=0), sub_len - k)",
          "start = torch.minimum((pq // dilation - k // 2).clamp(min=0), sub_len - k + 1)",
          ATTEND, "local3 and 13x10", "window at the far border sticks out of the map (the issue's border fault)"),
    Fault("mask-dilation-residue", PAT,
          "return (pk % dilation == residue) & (mk >= start) & (mk < start + k)",
          "return (mk >= start) & (mk < start + k)",
          PATTERNS, "neighbourhood", "dilated neighbourhood ignores the residue class (the spec; the tiled keys"
          " are residue-aligned by construction)"),
    Fault("mask-window-shift-sign", PAT,
          "return (pq + shift) // window == (pk + shift) // window",
          "return (pq - shift) // window == (pk - shift) // window",
          ATTEND, "swin and 13x10", "Swin windows shifted the wrong way"),
    Fault("mask-window-full-axis-shift", PAT,
          "    if ws == length:\n        return ws, 0",
          "    if ws > length:\n        return ws, 0",
          ATTEND, "swin_shift1 and 5x7", "shift kept on an axis that one window covers"),
    Fault("mask-band-strict", PAT,
          "return (diff.abs() <= window * dilation) & (diff % dilation == 0)",
          "return (diff.abs() < window * dilation) & (diff % dilation == 0)",
          ATTEND, "local1d and 5x7", "1-D band loses its outermost keys"),
    Fault("mask-axial-column", PAT,
          "y, x = t // w, t % w",
          "y, x = t // w, t % h",
          PATTERNS, "axial", "axial mask computes the column with the map height"),
    Fault("mask-global-columns", PAT,
          "return padded | is_global[:, None] | is_global[None, :]",
          "return padded | is_global[:, None]",
          PATTERNS, "global_vs_naive", "global tokens attend to all but are not attended by all"),
    Fault("mask-global-offset", PAT,
          "(t[:, None] == global_idx.to(t.device)[None, :] + g).any(1)",
          "(t[:, None] == global_idx.to(t.device)[None, :]).any(1)",
          PATTERNS, "global_vs_naive", "designated global tokens not offset past the leading tokens"),
    Fault("fast-axial-self-twice", FUNC,
          "mask = torch.cat([torch.ones(h, 1, w, dtype=torch.bool, device=q.device), ~eye], dim=-1)",
          "mask = torch.cat([torch.ones(h, 1, w, dtype=torch.bool, device=q.device), torch.ones_like(eye)], dim=-1)",
          ATTEND, "axial and 5x7", "axial fast path counts the query in its row and its column"),
    Fault("fast-global-twice", FUNC,
          "in_base = plan.allowed(plan.q_idx[:, :, None], gidx)",
          "in_base = plan.allowed(plan.q_idx[:, :, None], gidx) & False",
          ATTEND, "global and 13x10", "a global key inside the neighbourhood is attended twice"),
    Fault("fast-global-token-rows", FUNC,
          "source = torch.where(source < 0, source + g + n, source)",
          "source = torch.where(source < 0, source + n, source)",
          ATTEND, "global_tokens and 13x10", "leading tokens read the wrong output rows"),
    # ---- learned routing / sorting (cluster.py, sinkhorn.py)
    Fault("kmeans-farthest", CLUSTER,
          "F.normalize(centroids, dim=-1)).argmax(-1)",
          "F.normalize(centroids, dim=-1)).argmin(-1)",
          LEARNED, "routing or masked_core", "k-means routes every token to its farthest centroid"),
    Fault("lsh-no-negation", CLUSTER,
          "return torch.cat([proj, -proj], dim=-1).argmax(-1)",
          "return torch.cat([proj, proj], dim=-1).argmax(-1)",
          LEARNED, "routing or masked_core", "LSH buckets from [rR, rR]"),
    Fault("routing-query-only", CLUSTER,
          "return (F.normalize(q.detach(), dim=-1) + F.normalize(k.detach(), dim=-1)).float()",
          "return (2 * F.normalize(q.detach(), dim=-1)).float()",
          LEARNED, "routing or masked_core", "routing vector ignores the keys"),
    Fault("cluster-sort-by-position", CLUSTER,
          "perm = torch.argsort((cluster_ids * n + pos).float(), dim=-1)",
          "perm = torch.argsort((cluster_ids + pos * n).float(), dim=-1)",
          LEARNED, "routing or masked_core or layout", "tokens sorted by position instead of by cluster"),
    Fault("cluster-chunk-floor", CLUSTER,
          "return perm, rank, math.ceil(n / num_clusters)",
          "return perm, rank, max(1, n // num_clusters)",
          LEARNED, "masked_core or layout", "chunk size rounded down"),
    Fault("kmeans-ema-weights", CLUSTER,
          "mixed = self.ema_decay * self.centroids + (1.0 - self.ema_decay) * means",
          "mixed = (1.0 - self.ema_decay) * self.centroids + self.ema_decay * means",
          LEARNED, "ema", "EMA decay applied to the new mean instead of the old centroid"),
    Fault("kmeans-ema-sum", CLUSTER,
          "means = sums / counts.clamp(min=1.0)",
          "means = sums",
          LEARNED, "ema", "EMA moves centroids towards the sum, not the mean, of their tokens"),
    Fault("sinkhorn-argmin", SINK,
          "choice = log_p.argmax(dim=-1)",
          "choice = log_p.argmin(dim=-1)",
          LEARNED, "sinkhorn", "Sinkhorn picks the least likely block"),
    Fault("sinkhorn-rows-only", SINK,
          "log_p = log_p - torch.logsumexp(log_p, dim=-2, keepdim=True)",
          "log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)",
          LEARNED, "sinkhorn", "Sinkhorn normalises rows twice, never columns"),
    Fault("sinkhorn-temperature", SINK,
          "log_p = logits / temperature",
          "log_p = logits * temperature",
          LEARNED, "sinkhorn_summaries", "Sinkhorn temperature multiplies instead of divides"),
    Fault("sinkhorn-padded-mean", SINK,
          "counts = F.pad(torch.ones(n, device=x.device, dtype=x.dtype), (0, pad))",
          "counts = F.pad(torch.ones(n, device=x.device, dtype=x.dtype), (0, pad), value=1.0)",
          LEARNED, "sinkhorn_summaries", "tail block summary averages over padding"),
    Fault("sinkhorn-own-block-twice", SINK,
          "other = valid[choice] & (choice != torch.arange(nb, device=q.device)).unsqueeze(-1)",
          "other = valid[choice]",
          LEARNED, "block_choice", "a block that picks itself attends its keys twice (and trains the sort net)"),
    # ---- positional encodings (posenc.py)
    Fault("sincos-axes-swapped", POS,
          "return torch.cat([ax.sin(), ax.cos(), ay.sin(), ay.cos()], dim=1)",
          "return torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)",
          POSENC, "sincos", "sin-cos embedding with x and y swapped"),
    Fault("sincos-frequencies", POS,
          "omega = temperature ** (-torch.arange(f, dtype=torch.float32) / f)",
          "omega = temperature ** (-torch.arange(1, f + 1, dtype=torch.float32) / f)",
          POSENC, "sincos", "sin-cos frequencies start one step late"),
    Fault("learned-pe-stale-cache", POS,
          "key = (tuple(hw), self.pos_embed.device, self.pos_embed.dtype, self.pos_embed._version)",
          "key = (tuple(hw), self.pos_embed.device, self.pos_embed.dtype)",
          POSENC, "learned", "eval cache of the resized embedding survives a weight update"),
    Fault("learned-pe-transposed", POS,
          "return grid.flatten(2).squeeze(0).transpose(0, 1)",
          "return grid.transpose(2, 3).flatten(2).squeeze(0).transpose(0, 1)",
          POSENC, "learned", "learned embedding read column-major"),
    Fault("cpe-no-residual", POS,
          "return x + self.proj(x)",
          "return self.proj(x)",
          POSENC, "conditional", "conditional position encoding drops its residual"),
    # ---- the seam: c1 / c2 / n inference (integration.py) and the safe-load allow-list
    Fault("seam-c1", "yolo_attn/integration.py",
          "c1, c2, n = stand.cv1.conv.in_channels, stand.cv3.conv.out_channels, len(stand.m)",
          "c1, c2, n = stand.cv1.conv.out_channels, stand.cv3.conv.out_channels, len(stand.m)",
          "tests/test_foundation.py::test_c3tr_config_channels_match_stock_yolov5[n]", "",
          "block input channels read from the stand-in's hidden width"),
    Fault("seam-c2", "yolo_attn/integration.py",
          "c1, c2, n = stand.cv1.conv.in_channels, stand.cv3.conv.out_channels, len(stand.m)",
          "c1, c2, n = stand.cv1.conv.in_channels, stand.cv2.conv.out_channels, len(stand.m)",
          "tests/test_foundation.py::test_c3tr_config_channels_match_stock_yolov5[n]", "",
          "block output channels read from the stand-in's hidden width"),
    Fault("seam-n", "yolo_attn/integration.py",
          "c1, c2, n = stand.cv1.conv.in_channels, stand.cv3.conv.out_channels, len(stand.m)",
          "c1, c2, n = stand.cv1.conv.in_channels, stand.cv3.conv.out_channels, 1",
          "tests/test_foundation.py::test_c3tr_config_channels_match_stock_yolov5[m]", "",
          "repeat count not scaled by depth"),
    Fault("safe-load-allow-list", "yolo_attn/integration.py",
          "torch.serialization.add_safe_globals(list(classes))",
          "torch.serialization.add_safe_globals([])",
          "tests/test_foundation.py::test_checkpoint_loads_under_safe_load", "",
          "our classes never reach torch's safe-globals list"),
    # ---- command line parsing (cli.py)
    Fault("cli-unknown-key", "yolo_attn/cli.py",
          "                if k not in valid:\n                    raise _unknown(k, valid)",
          "                if k not in valid and not k.isidentifier():\n                    raise _unknown(k, valid)",
          "tests/test_cli.py::test_usage_errors_are_one_line_exit_2", "",
          "a misspelt key=value argument is accepted"),
    Fault("cli-bare-flag", "yolo_attn/cli.py",
          "out[word] = True  # bare boolean flag",
          "out[word] = False  # bare boolean flag",
          "tests/test_cli.py::test_parse_args_follows_ultralytics_grammar", "",
          "a bare flag such as `resume` turns the option off"),
    Fault("cli-leading-dashes", "yolo_attn/cli.py",
          "a = a[2:]  # ultralytics accepts",
          "a = a[1:]  # ultralytics accepts",
          "tests/test_cli.py::test_parse_args_follows_ultralytics_grammar", "",
          "--key=value keeps one dash"),
    # ---- input checks (checks.py, workflows.py)
    Fault("check-imgsz-multiple", "yolo_attn/checks.py",
          "if isinstance(v, bool) or not isinstance(v, int) or v < stride or v % stride:",
          "if isinstance(v, bool) or not isinstance(v, int) or v < stride:",
          BAD, "imgsz", "an image size that is not a multiple of the stride is accepted"),
    Fault("check-label-coordinates", "yolo_attn/checks.py",
          "if not 0.0 <= v <= 1.0:",
          "if not 0.0 <= v <= 2.0:",
          BAD, "coordinate", "label coordinates above 1 are accepted"),
    Fault("check-label-class", "yolo_attn/checks.py",
          "if c != int(c) or not 0 <= c < nc:",
          "if c != int(c) or not 0 <= c:",
          BAD, "label-class-out-of-range", "label class ids >= nc are accepted"),
    Fault("check-truncated-checkpoint", "yolo_attn/checks.py",
          "if not zipfile.is_zipfile(model):",
          "if not zipfile.is_zipfile(model) and size == 0:",
          BAD, "truncated", "a truncated checkpoint reaches the unpickler"),
    Fault("check-dynamic-export", "yolo_attn/checks.py",
          'if getattr(m, "exports_any_size", True) is False]',
          'if getattr(m, "exports_any_size", True) is None]',
          EXPORT, "refused", "dynamic export of fixed-size attention is let through"),
    Fault("check-cuda-index", "yolo_attn/workflows.py",
          "missing = [i for i in _cuda_indices(device) if i >= count]",
          "missing = [i for i in _cuda_indices(device) if i > count]",
          BAD, "cuda", "device=N is accepted on a host with N CUDA devices"),
    # ---- export parity (workflows.check_export_parity)
    Fault("parity-min-diff", "yolo_attn/workflows.py",
          "diff = float(np.abs(ref - got).max())",
          "diff = float(np.abs(ref - got).min())",
          EXPORT, "wrong_exports", "parity reports the smallest difference"),
    Fault("parity-self", "yolo_attn/workflows.py",
          "diff = float(np.abs(ref - got).max())",
          "diff = float(np.abs(got - got).max())",
          EXPORT, "wrong_exports", "parity compares the exported output with itself"),
    Fault("parity-other-input", "yolo_attn/workflows.py",
          "got = np.asarray(_first_tensor(run_exported(x)), dtype=np.float32)",
          "got = np.asarray(_first_tensor(run_exported(np.zeros_like(x))), dtype=np.float32)",
          EXPORT, "runtime_parity and local", "the exported file is run on another input than PyTorch"),
    # ---- data generation (data/shapes.py)
    Fault("data-label-xy-swapped", "yolo_attn/data/shapes.py",
          "labels.append((cls, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size))",
          "labels.append((cls, (y0 + y1) / 2 / size, (x0 + x1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size))",
          "tests/test_shapes_data.py", "tight", "box centre x and y swapped"),
    Fault("data-label-wh-swapped", "yolo_attn/data/shapes.py",
          "labels.append((cls, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size))",
          "labels.append((cls, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (y1 - y0) / size, (x1 - x0) / size))",
          "tests/test_shapes_data.py", "tight", "box width and height swapped"),
    Fault("data-val-is-train", "yolo_attn/data/shapes.py",
          'rng = np.random.default_rng([seed, 0 if split == "train" else 1])',
          "rng = np.random.default_rng([seed, 0])",
          "tests/test_shapes_data.py", "splits", "validation images are the training images"),
)


# --------------------------------------------------------------------------------------------------------- checking
def problems(faults: Sequence[Fault] = FAULTS, root: Path = REPO) -> list[str]:
    """Everything wrong with a fault table against the code in ``root`` (empty when it is usable).

    Args:
        faults: The fault table.
        root: Repository root to check against.

    Returns:
        One message per problem: duplicate ids, missing files, stale snippets (not found exactly once), no-op
        replacements, selections naming a missing test file.
    """
    out, seen = [], set()
    for f in faults:
        if f.id in seen:
            out.append(f"{f.id}: duplicate id")
        seen.add(f.id)
        path = root / f.file
        if not path.is_file():
            out.append(f"{f.id}: file {f.file} not found")
            continue
        count = path.read_text().count(f.original)
        if count != 1:
            out.append(f"{f.id}: stale: the snippet occurs {count} times in {f.file} (expected once): {f.original!r}")
        if f.replacement == f.original:
            out.append(f"{f.id}: the replacement equals the original")
        if not (root / f.select.split("::")[0]).is_file():
            out.append(f"{f.id}: test file {f.select.split('::')[0]} not found")
    return out


def copy_repo(repo: Path, dest: Path) -> Path:
    """Copy the repository's files (tracked and untracked, not ignored; symlinks kept) to ``dest``."""
    listing = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=repo, check=True,
                             capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, dict.fromkeys(listing)):
        src, dst = repo / rel, dest / rel
        if not (src.exists() or src.is_symlink()):
            continue  # deleted in the working tree
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    return dest


# ---------------------------------------------------------------------------------------------------------- running
@dataclass
class Outcome:
    """What one pytest run gave: exit status, seconds, pytest's summary line."""

    rc: int
    seconds: float
    summary: str
    tail: str


#: Third-party modules imported once by the runner and inherited by every forked pytest run (saves their import
#: time per fault). Nothing of the project, and not ultralytics: it reads its settings from the environment that
#: the tests' conftest sets up at import.
PRELOAD = ("numpy", "torch", "torchvision", "cv2", "onnxruntime", "yaml", "matplotlib.pyplot", "pytest")


def preload() -> None:
    """Import :data:`PRELOAD` (those that are installed) in this process."""
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            continue


def run_pytest(root: Path, args: Sequence[str], timeout: float) -> Outcome:
    """``pytest *args`` in ``root`` with ``root`` first on the import path, in a forked child where the platform has
    ``fork`` (a fresh interpreter otherwise); the child and everything it starts are killed after ``timeout``."""
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        if hasattr(os, "fork"):
            rc = _forked_pytest(root, args, timeout, log)
        else:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))}
            try:
                rc = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=root, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = -1
        log.seek(0)
        text = log.read()
    if rc == -1:
        text += f"\ntimeout after {timeout:.0f} s"
    return Outcome(rc, time.monotonic() - start, _summary(text), text[-3000:])


def _forked_pytest(root: Path, args: Sequence[str], timeout: float, log) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: own process group, output to the log, the copy first on every path
        rc = 3
        try:
            os.setpgid(0, 0)
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            os.chdir(root)
            own = {str(REPO), str(REPO / "tests"), str(REPO / "scripts"), ""}
            sys.path[:] = [str(root)] + [p for p in sys.path if p not in own]
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in own])
            import pytest

            rc = int(pytest.main(list(args)))
        except BaseException:  # noqa: BLE001 - report anything, then leave without running the parent's cleanup
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 3
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, 9)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return -1
        time.sleep(0.1)


def _summary(text: str) -> str:
    """pytest's final counts line (``1 failed, 3 passed``), or the last output line."""
    lines = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|errors?|deselected)\b", line)]
    last = lines[-1] if lines else (text.strip().splitlines() or [""])[-1]
    return re.sub(r"=+|\s+in [\d.]+s.*", "", last).strip()[:80]


@dataclass
class Result:
    """One fault's verdict."""

    fault: Fault
    outcome: Outcome

    @property
    def caught(self) -> bool:
        """The selection failed under the fault (test failures, collection errors or a time-out)."""
        return self.outcome.rc in (1, 2, -1)

    @property
    def selection_error(self) -> bool:
        """pytest could not run the selection (no tests collected, usage or internal error)."""
        return self.outcome.rc in (3, 4, 5)


def plant(root: Path, fault: Fault) -> str:
    """Write ``fault`` into the copy at ``root``; returns the original text for :func:`restore`."""
    path = root / fault.file
    text = path.read_text()
    if text.count(fault.original) != 1:
        raise RuntimeError(f"{fault.id}: stale fault, snippet not found exactly once in {fault.file}")
    path.write_text(text.replace(fault.original, fault.replacement))
    return text


def restore(root: Path, fault: Fault, text: str) -> None:
    """Put the original file back."""
    (root / fault.file).write_text(text)


def baseline_groups(faults: Iterable[Fault]) -> list[list[str]]:
    """pytest argument lists that run, together, every fault's selection once (one run per test path)."""
    groups: dict[str, list[str]] = {}
    for f in faults:
        groups.setdefault(f.select, []).append(f.k)
    out = []
    for select, ks in groups.items():
        k = "" if "" in ks else " or ".join(f"({k})" for k in dict.fromkeys(ks))
        out.append([*_SELECT_FLAGS, select, *(["-k", k] if k else [])])
    return out


def run(faults: Sequence[Fault], repo: Path = REPO, baseline: bool = True, timeout: float = 600.0,
        say: Callable[[str], None] = print) -> tuple[list[Result], list[str]]:
    """Run the mutation check in a temporary copy of ``repo``.

    Args:
        faults: Faults to plant (one at a time).
        repo: Repository root (read only).
        baseline: First run every selection on the unmodified copy; it must pass.
        timeout: Seconds allowed per pytest run.
        say: Progress printer.

    Returns:
        ``(results, errors)``: one result per fault; errors are baseline failures and selection errors.
    """
    stale = problems(faults, repo)
    if stale:
        return [], stale
    errors, results = [], []
    preload()
    with tempfile.TemporaryDirectory(prefix="yolo-attn-mutation-") as tmp:
        root = copy_repo(repo, Path(tmp) / "repo")
        if baseline:
            for args in baseline_groups(faults):
                out = run_pytest(root, args, timeout)
                say(f"baseline {' '.join(shlex.quote(a) for a in args[len(_SELECT_FLAGS):])}: {out.summary} "
                    f"({out.seconds:.0f} s)")
                if out.rc != 0:
                    errors.append(f"baseline run failed without any fault (rc={out.rc}): {args}\n{out.tail}")
            if errors:
                return results, errors
        for i, fault in enumerate(faults, 1):
            text = plant(root, fault)
            try:
                result = Result(fault, run_pytest(root, fault.pytest_args(), timeout))
            finally:
                restore(root, fault, text)
            results.append(result)
            verdict = "caught" if result.caught else ("SELECTION ERROR" if result.selection_error else "SURVIVED")
            say(f"[{i}/{len(faults)}] {fault.id}: {verdict} ({result.outcome.summary}, {result.outcome.seconds:.0f} s)")
            if result.selection_error:
                errors.append(f"{fault.id}: pytest could not run the selection (rc={result.outcome.rc})\n"
                              f"{result.outcome.tail}")
    return results, errors


# ---------------------------------------------------------------------------------------------------------- report
def table(results: Sequence[Result]) -> str:
    """Markdown table: fault, file, what it plants, tests run, caught, seconds."""
    rows = ["| fault | file | planted mistake | tests run | result | caught | seconds |", "|---|---|---|---|---|---|---:|"]
    for r in results:
        caught = "yes" if r.caught else "**NO**"
        rows.append(f"| {r.fault.id} | {r.fault.file} | {r.fault.what} | `{r.fault.shown()}` | {r.outcome.summary} | "
                    f"{caught} | {r.outcome.seconds:.0f} |")
    return "\n".join(rows)


def environment() -> str:
    """Machine and versions, without paths."""
    versions = []
    for name in ("torch", "ultralytics", "numpy", "onnxruntime", "pytest"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except Exception:  # noqa: BLE001 - a missing optional package is just not listed
            continue
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            + ", ".join(versions))


def report(results: Sequence[Result], command: str, seconds: float) -> str:
    """The docs/MUTATION.md text."""
    caught = sum(r.caught for r in results)
    return "\n".join([
        "# Mutation check",
        "",
        "Planted faults, one at a time, in a temporary copy of the repository; for each, the tests that claim to",
        "rule it out were run (`python -m pytest -x -q`). Every fault must be caught. The fault table lives in",
        "`tests/mutation.py` (`FAULTS`); re-target a fault there when the code it names changes.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {environment()}",
        f"- Result: {caught} of {len(results)} faults caught; {seconds / 60:.1f} minutes in all (wall time on a "
        "shared machine, baseline runs included).",
        "",
        table(results),
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see ``scripts/mutate.py``).

    Args:
        argv: Arguments without the program name.

    Returns:
        0 when every fault was caught; 1 when one survived; 2 on stale faults, failing baselines or selection errors.
    """
    p = argparse.ArgumentParser(prog="scripts/mutate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated fault ids (default: all)")
    p.add_argument("--list", action="store_true", help="list the faults and exit")
    p.add_argument("--check", action="store_true", help="only check that every snippet is found (stale faults)")
    p.add_argument("--no-baseline", action="store_true", help="skip the unmodified runs of the selections")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run")
    p.add_argument("--out", default="docs/MUTATION.md", help="report file, relative to the repo ('' for none)")
    a = p.parse_args(argv)
    faults = [f for f in FAULTS if not a.only or f.id in a.only.split(",")]
    unknown = set(filter(None, a.only.split(","))) - {f.id for f in FAULTS}
    if unknown:
        print(f"unknown fault ids: {sorted(unknown)}", file=sys.stderr)
        return 2
    if a.list:
        for f in faults:
            print(f"{f.id:28s} {f.file:36s} {f.shown()}")
        return 0
    if a.check:
        issues = problems(faults)
        print("\n".join(issues) or f"{len(faults)} faults, every snippet found once")
        return 2 if issues else 0
    start = time.monotonic()
    results, errors = run(faults, baseline=not a.no_baseline, timeout=a.timeout)
    for e in errors:
        print(f"ERROR: {e}", file=sys.stderr)
    if errors:
        return 2
    print()
    print(table(results))
    command = "nice -n 19 python scripts/mutate.py" + "".join(f" {shlex.quote(x)}" for x in (argv or sys.argv[1:]))
    if a.out and not a.only:
        (REPO / a.out).write_text(report(results, command, time.monotonic() - start))
        print(f"\nwritten {a.out}")
    survived = [r.fault.id for r in results if not r.caught]
    print(f"\n{len(results) - len(survived)} of {len(results)} faults caught" +
          (f"; SURVIVED: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0
