"""The mutation check's fault table: each :class:`Fault` plants one mistake in today's code and names the tests that
must catch it. Run by ``tests/mutation.py`` / ``scripts/mutate.py``.

Re-targeting: when the code a fault names changes, ``tests/test_mutation_table.py`` (and ``scripts/mutate.py
--check``) report it as stale; copy the new line into ``original``, plant the same mistake in ``replacement``, and
check with ``scripts/mutate.py --only ID`` that it is still caught. Files being rewritten as of this table:
``attention/tiling.py`` and ``functional.py``'s size handling (export), cluster / Sinkhorn dtype handling (half),
``blocks/__init__.py`` (transfer).
"""

from __future__ import annotations

from dataclasses import dataclass


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

    def shown(self) -> str:
        """The selection as one short string for the report."""
        return self.select + (f" -k '{self.k}'" if self.k else "")


ATTEND = "tests/test_attend.py::test_fast_path_matches_reference"
REL = "tests/test_attend.py::test_rel_pos_bias_matches_reference"
PATTERNS = "tests/test_patterns.py"
LEARNED = "tests/test_learned_attention.py"
POSENC = "tests/test_posenc.py"
BAD = "tests/test_bad_inputs.py"
EXPORT = "tests/test_export_configs.py"
TILING, PAT, FUNC = (f"yolo_attn/attention/{name}.py" for name in ("tiling", "patterns", "functional"))
CLUSTER, SINK, POS = (f"yolo_attn/attention/{name}.py" for name in ("cluster", "sinkhorn", "posenc"))

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
    # ---- command line parsing (cli.py) and its offline default (__init__.py)
    Fault("cli-offline-default", "yolo_attn/__init__.py",
          'if program.startswith("yolo-attn") or as_module:',
          'if program.startswith("yolo_attn") or as_module:',
          "tests/test_offline.py", "first_import", "the console script no longer goes offline before ultralytics"),
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
