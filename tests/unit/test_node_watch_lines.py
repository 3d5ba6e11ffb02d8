"""The Node watch's line splitting: documents split across chunks, many in one, blank lines."""

from __future__ import annotations

import json
import random

from nodeos.adapters.nodewatch import split_lines


def test_lines_come_whole_however_the_stream_is_cut() -> None:
    documents = [
        json.dumps({"type": "MODIFIED", "n": i, "pad": "x" * (i * 37 % 500)}) for i in range(200)
    ]
    stream = ("\n".join(documents) + "\n\n").encode()
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(0, 40)))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert [json.loads(line)["n"] for line in split_lines(chunks)] == list(range(200))


def test_a_last_line_without_its_newline_is_not_lost() -> None:
    assert list(split_lines([b'{"a": 1}\n{"b"', b": 2}"])) == [b'{"a": 1}', b'{"b": 2}']
    assert list(split_lines([b"\n", b"  \n", b""])) == []
