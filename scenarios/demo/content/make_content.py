#!/usr/bin/env python3
"""Write the demo_sensor content files (format: FORMAT.md, format.toml).

    python3 make_content.py OUTDIR

writes good.content, cf291-21-fields.content and truncated.content. Deterministic
(stdlib only, no timestamps): the committed files are this script's output.
"""
import os
import struct
import sys
import zlib

MAGIC = b"DSC1"
WILDCARD = 0xFFFFFFFF
SENSOR_INPUTS = 20
INPUT_BASE = 0x1000  # the sensor's inputs: input[i] = INPUT_BASE + i


def encode(templates, instances):
    """templates: [(id, field_count)]; instances: [(template_id, [criteria...])].

    Each instance must give exactly its template's field_count criteria."""
    fields = dict(templates)
    body = b"".join(struct.pack("<HH", tid, n) for tid, n in templates)
    for tid, criteria in instances:
        assert len(criteria) == fields[tid], (tid, len(criteria))
        body += struct.pack("<HH", tid, 0) + struct.pack(f"<{len(criteria)}I", *criteria)
    total = 12 + len(body)
    return MAGIC + struct.pack("<IHH", total, len(templates), len(instances)) + body


def criteria(n, **exact):
    """n criteria, all wildcards except exact={'f3': value, ...}."""
    c = [WILDCARD] * n
    for k, v in exact.items():
        c[int(k[1:])] = v
    return c


def good():
    # Two 20-field templates; instances 0, 2 and 3 match the sensor's inputs, 1 does not.
    return encode(
        [(1, 20), (2, 20)],
        [
            (1, criteria(20, f0=INPUT_BASE + 0, f5=INPUT_BASE + 5)),
            (1, criteria(20, f3=0xDEADBEEF)),
            (2, [INPUT_BASE + i for i in range(20)]),
            (2, criteria(20)),
        ],
    )


def cf291():
    # Well-formed (every length consistent) but template 291 declares 21 fields while
    # the sensor supplies 20, and its instance's 21st criterion is not a wildcard, so
    # the unchecked interpreter reads input[20]. Instance 0 (template 1) matches first.
    return encode(
        [(1, 20), (291, 21)],
        [
            (1, criteria(20, f0=INPUT_BASE + 0, f5=INPUT_BASE + 5)),
            (291, criteria(21, f20=INPUT_BASE + 20)),
        ],
    )


def truncated():
    # good.content cut in the middle of instance 1's criteria; total_length still says
    # the full size, so both interpreter variants reject it before reading any criteria.
    data = good()
    cut = 12 + 2 * 4 + (4 + 20 * 4) + 4 + 10 * 4
    return data[:cut]


FILES = {
    "good.content": good,
    "cf291-21-fields.content": cf291,
    "truncated.content": truncated,
}


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out = argv[1]
    os.makedirs(out, exist_ok=True)
    for name, make in FILES.items():
        data = make()
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes, crc32 {zlib.crc32(data):08x}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
