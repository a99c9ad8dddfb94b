"""The download plans of the FITS archives: one item per product, named by archive, checked as FITS."""

import pytest
from astropy.table import Table

from latentsky.archives.sdss import sdss
from latentsky.archives.skyview import skyview
from latentsky.archives.ukidss import ukidss
from latentsky.exceptions import ArchiveError


def products(*ids):
    return Table({"product_id": list(ids), "access_url": [f"http://127.0.0.1:1/{i}" for i in ids]})


@pytest.mark.parametrize(
    "client, archive, name",
    [
        (sdss, "sdss", "spec-{}.fits"),
        (skyview, "skyview", "{}.fits"),
        (ukidss, "ukidss", "ukidss_{}.fits"),
    ],
)
def test_a_product_listed_twice_is_fetched_once(client, archive, name, tmp_path):
    # two nearby positions of one query can match the same spectrum or cut-out
    items = client.plan(products("a-1", "b:2", "a-1"), tmp_path)
    assert [i.key for i in items] == [f"{archive}/a-1", f"{archive}/b:2"]
    assert [i.dest.name for i in items] == [name.format("a-1"), name.format("b_2")]  # file-name safe
    assert all(i.dest.parent == tmp_path and i.kind == "fits" for i in items)
    assert items[1].url == "http://127.0.0.1:1/b:2"
    assert not list(tmp_path.iterdir())  # planning writes nothing


def test_a_table_without_urls_is_refused_by_name(tmp_path):
    with pytest.raises(ArchiveError, match="access_url"):
        skyview.plan(Table({"product_id": ["x"]}), tmp_path)
