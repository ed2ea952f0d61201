"""params.yaml's ``extraction``: how much one downloaded archive may unpack to.

Checked from the archive's directory (a zip's central directory, a tar's headers) before anything is
written, so a zip bomb or an archive of millions of files is refused in one line instead of filling the disk.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from transferbench.config.sections import Section


class Extraction(Section):
    """Limits on one archive's content; the defaults hold every source's real archive several times over."""

    max_bytes: Annotated[int, Field(ge=1)] = Field(
        default=2_000_000_000,
        description="uncompressed bytes of all entries together, and never more than the disk has free (Kaggle's "
                    "train.zip, the largest source, unpacks to 0.55 GB)")
    max_ratio: Annotated[float, Field(gt=1)] = Field(
        default=100.0,
        description="an entry's uncompressed over its compressed size (photos: about 1; a zip bomb: about 1,000)")
    max_entries: Annotated[int, Field(ge=1)] = Field(
        default=50_000,
        description="files and folders (Kaggle's train.zip has 25,000 photos)")
