"""Make profiles/data/model_catalog.json: every model config NVIDIA's aiconfigurator-core ships, as
a capsim model (needs the kernel-db extra). tests/test_moe.py checks the file against the
installed package.

    python scripts/make_model_catalog.py
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from capsim.common.files import write_atomically
from capsim.profiles.kernel_db import package_catalog, package_version
from capsim.profiles.models import CATALOG_FILE

DATA = Path(__file__).resolve().parent.parent / "profiles" / "data"


def main() -> None:
    models, aliases, unread = package_catalog()
    data = {
        "provenance": {
            "package": "aiconfigurator-core",
            "package_version": package_version(),
            "date": datetime.date.today().isoformat(),
            "made_by": "scripts/make_model_catalog.py",
        },
        "models": [m.to_dict() for m in models],
        "aliases": aliases,
        "unread": unread,
    }
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    write_atomically(DATA / CATALOG_FILE, lambda tmp: Path(tmp).write_text(text))
    print(f"{len(models)} models, {len(aliases)} ids, {len(unread)} unread -> {DATA / CATALOG_FILE}")
    for hf_id, why in unread.items():
        print(f"  unread {hf_id}: {why}")


if __name__ == "__main__":
    main()
