"""The Data Docs index builder of the hub's site (named by module and class in the site's config).

Great Expectations' default index builder deletes every page whose result is not in the context's stores;
the hub validates with an ephemeral context (in-memory stores, one validation each), so the default would
keep only the latest validation's page. This one keeps the pages of earlier validations on disk; the index
lists every suite and the latest validation.
"""

from __future__ import annotations

from typing import Any

from great_expectations.render.renderer.site_builder import DefaultSiteIndexBuilder


class KeepingSiteIndexBuilder(DefaultSiteIndexBuilder):
    def build(self, skip_and_clean_missing: bool = True, build_index: bool = True) -> Any:
        return super().build(skip_and_clean_missing=False, build_index=build_index)
