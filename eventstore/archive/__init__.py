"""Layer content: tar streams in (extraction with a tar-split) and out (DESIGN §5).

    import_layer   one pass: detect compression, hash both sides, extract safely,
                   record the tar-split                              (importer.py)
    export_layer   the original tar again, byte for byte              (exporter.py)
    diff_changes   a tar of a layer's changes against its parents     (changes.py)
    first_damaged_path  which file of an imported layer no longer matches
    stored_files   the regular files an import stored (to find files added since)

The tar-split format and whiteout handling are in docs/content.md; what extraction
refuses or contains, and why, in docs/security.md.
"""

from eventstore.archive.changes import diff_changes
from eventstore.archive.exporter import export_layer, first_damaged_path, stored_files
from eventstore.archive.importer import DEFAULT_MAX_SIZE, ImportResult, import_layer

__all__ = ["DEFAULT_MAX_SIZE", "ImportResult", "diff_changes", "export_layer",
           "first_damaged_path", "import_layer", "stored_files"]
