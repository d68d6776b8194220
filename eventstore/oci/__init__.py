"""OCI images in and out (issue 7; docs/interop.md).

    import_oci   an OCI image layout's layers into the store, as chain ids  (importer.py)
    export_oci   the chain ending at a layer, as an OCI image layout       (exporter.py)
    chain_ids    containers/image's layer ids, from an image's diff ids   (chain.py)

Reading and checking a layout (index.json, manifests, configs, blobs, media types) is in
layout.py.
"""

from eventstore.oci.chain import chain_ids
from eventstore.oci.exporter import ExportResult, export_oci, host_platform
from eventstore.oci.importer import ImportResult, LayerStep, import_oci, plan_import
from eventstore.oci.layout import ImageNotFound, ImageRejected, Platform, parse_platform, parse_reference

__all__ = ["ExportResult", "ImageNotFound", "ImageRejected", "ImportResult", "LayerStep", "Platform",
           "chain_ids", "export_oci", "host_platform", "import_oci", "parse_platform", "parse_reference",
           "plan_import"]
