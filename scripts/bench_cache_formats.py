"""Compare candidate on-disk encodings of a Scene: size, encode and decode time (justifies the cache format).

    python scripts/bench_cache_formats.py --out benchmarks/results/cache_formats.json

Candidates: pickle of the dense arrays (what a per-scene pickle cache stores), np.savez / savez_compressed,
dense arrays + zstd, dense + byte shuffle + zstd, and the cache's record (valid-packed, bit-delta, shuffle,
zstd) at several levels. Scenes: the AV2 fixture and (when present) 100 AV1 val scenes.
"""

from __future__ import annotations

import argparse
import io
import pickle
import statistics
import time
from pathlib import Path

import numpy as np
import zstandard

from smartpretrain.data.cache import _shuffle, decode_scene, encode_scene
from smartpretrain.data.converters.av2 import Av2Converter
from smartpretrain.data.scene import MapData, Scene
from smartpretrain.io.run_outputs import write_report

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def dense_arrays(scene: Scene) -> dict[str, np.ndarray]:
    a = scene.agents
    out = {f"agents.{k}": getattr(a, k) for k in ("type", "role", "is_sdc", "position", "heading", "velocity", "valid")}
    out |= {f"map.{k}": getattr(scene.map, k) for k in MapData.__dataclass_fields__}
    return out


def candidates(level_list: list[int]) -> dict[str, tuple]:
    def npz(scene: Scene, compressed: bool) -> bytes:
        buf = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buf, **dense_arrays(scene))
        return buf.getvalue()

    def load_npz(blob: bytes) -> None:
        with np.load(io.BytesIO(blob)) as z:
            {k: z[k] for k in z.files}

    def dense_zstd(scene: Scene, shuffle: bool) -> bytes:
        parts = [(_shuffle(np.ascontiguousarray(v)) if shuffle else v.tobytes()) for v in dense_arrays(scene).values()]
        return zstandard.ZstdCompressor(level=3).compress(b"".join(parts))

    cands: dict[str, tuple] = {
        "pickle_dense": (lambda s: pickle.dumps(dense_arrays(s), protocol=5), pickle.loads),
        "npz": (lambda s: npz(s, False), load_npz),
        "npz_compressed": (lambda s: npz(s, True), load_npz),
        "dense_zstd3": (lambda s: dense_zstd(s, False), zstandard.ZstdDecompressor().decompress),
        "dense_shuffle_zstd3": (lambda s: dense_zstd(s, True), zstandard.ZstdDecompressor().decompress),
    }
    for level in level_list:
        cands[f"cache_record_zstd{level}"] = (lambda s, lv=level: encode_scene(s, lv), decode_scene)
    return cands


def measure(scenes: list[Scene], levels: list[int]) -> dict[str, dict[str, float]]:
    out = {}
    for name, (encode, decode) in candidates(levels).items():
        blobs = [encode(s) for s in scenes]
        enc, dec = [], []
        for s, b in zip(scenes, blobs, strict=True):
            t = time.perf_counter()
            encode(s)
            enc.append(time.perf_counter() - t)
            t = time.perf_counter()
            decode(b)
            dec.append(time.perf_counter() - t)
        out[name] = {
            "kib_per_scene": round(sum(map(len, blobs)) / len(blobs) / 1024, 2),
            "encode_ms": round(1e3 * statistics.median(enc), 3),
            "decode_ms": round(1e3 * statistics.median(dec), 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 3, 9, 19])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cache_formats.json")
    args = parser.parse_args()
    sets: dict[str, list[Scene]] = {}
    av2 = SHARED / "fixtures" / "av2"
    if not av2.exists():
        raise SystemExit(f"{av2} not found: this benchmark needs ../shared beside the repository")
    conv = Av2Converter(av2, "val")
    sets["av2_fixture"] = [conv.convert(i).scene for i in conv.list_items()] * 20
    av1 = SHARED / "data" / "av1"
    if av1.exists():
        from smartpretrain.data.converters.av1 import Av1Converter

        c1 = Av1Converter(av1, "val")
        sets["av1_val_100"] = [c1.convert(i).scene for i in c1.list_items()[:100]]
    report = {}
    for name, scenes in sets.items():
        report[name] = measure(scenes, args.levels)
        print(f"\n{name} ({len(scenes)} scenes)")
        print(f"  {'format':<24}{'KiB/scene':>10}{'encode ms':>11}{'decode ms':>11}")
        for fmt, r in report[name].items():
            print(f"  {fmt:<24}{r['kib_per_scene']:>10.2f}{r['encode_ms']:>11.3f}{r['decode_ms']:>11.3f}")
    write_report(args.out, {"scene_sets": {name: len(scenes) for name, scenes in sets.items()}, "results": report})


if __name__ == "__main__":
    main()
