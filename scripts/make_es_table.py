#!/usr/bin/env python
"""Write radimg/kernels/es_betas.py: the ES kernel's best ``beta`` and its measured 1-D error
for every support W (MIN_SUPPORT..MAX_SUPPORT) at every oversampling factor the operators'
cost models try (radimg.ops.geometry.SIGMAS, SIGMAS_W, and 2.0, the default).

radimg.kernels.es._best_beta looks a pair up there before it optimises (a golden-section
search of ~30 error measurements per pair: ~0.5 s of every run's set-up before the table);
tests/test_es.py recomputes entries and requires them bitwise equal, so the table can never
drift from the code. Rerun this script whenever radimg/kernels/es.py's error measure changes:

    python scripts/make_es_table.py
"""

from __future__ import annotations

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from radimg.kernels import es  # noqa: E402
from radimg.ops import geometry as O  # noqa: E402


def sigmas():
    return sorted({round(float(s), 6) for s in (*O.SIGMAS, *O.SIGMAS_W, 2.0)})


def main():
    rows = []
    for sg in sigmas():
        for W in range(es.MIN_SUPPORT, es.MAX_SUPPORT + 1):
            beta, err = es.best_beta_computed(W, sg)
            rows.append(f"    ({W}, {sg!r}): ({beta!r}, {err!r}),")
    text = (
        '"""Best ES ``beta`` and its measured 1-D error per (support W, oversampling), made by\n'
        "scripts/make_es_table.py from radimg.kernels.es (generated: do not edit; checked\n"
        'against the code by tests/test_es.py)."""\n\n'
        "BEST_BETA = {\n" + "\n".join(rows) + "\n}\n"
    )
    out = REPO / "radimg" / "kernels" / "es_betas.py"
    out.write_text(text)
    print(f"wrote {out} ({len(rows)} entries)")


if __name__ == "__main__":
    main()
