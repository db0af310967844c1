#!/usr/bin/env python3
"""How often does the offline dataset find something? (the figures in data/README.md)

For random points on land, in the contiguous USA and worldwide, the share that
have at least one place within 10 km (the radius the course's grading scripts
use), with the towns layer alone (places.tsv) and with the airports layer added
(places.tsv + airports.tsv).

How the land points are chosen
------------------------------
* Points are drawn uniformly over the sphere (longitude uniform, latitude as
  asin of a uniform number), from a fixed seed, so every run gives the same
  points and the same figures.
* A point counts as land when the `global-land-mask` package (PyPI, MIT;
  NOAA's GLOBE 1 km elevation grid) says it is. Inland lakes large enough to
  show in that grid count as water.
* "Contiguous USA": points drawn in the box 24.5..49.4 N, 124.8..66.9 W, kept
  when on land and when the `coordinates2country` package (PyPI; a country
  bitmap of about 0.15 degrees, 15 km, per pixel) puts them in the US. Near a
  border that bitmap may assign a point to the wrong side.
* "Worldwide" is reported twice: with Antarctica, and without it (south of
  60 S dropped), since no town or airport list covers the ice sheet.

The search is the provider's: great-circle (haversine) distance on a sphere of
radius 6,371,008.8 m, places within the radius inclusive.

Usage
-----
    pip install numpy global-land-mask==1.0.0 coordinates2country==1.0.9 setuptools
    python3 data/coverage.py [POINTS [TOWNS]]  # default 10000 points per region

Run from anywhere; it reads places.tsv and airports.tsv next to this script, or
TOWNS instead of places.tsv (to try another towns file, such as one made from
GeoNames' cities500).
"""

import math
import os
import random
import sys

from coordinates2country.coordinates2country import Coordinates2Country
from global_land_mask import globe

HERE = os.path.dirname(os.path.abspath(__file__))
EARTH_RADIUS_M = 6_371_008.8
RADIUS_M = 10_000.0
SEED = 131


def read_layer(path):
    """[(lat, lng)] of every place in one dataset file."""
    points = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                continue
            fields = line.rstrip("\n").split("\t")
            points.append((float(fields[2]), float(fields[3])))
    return points


class Grid:
    """Places in 1x1 degree cells, like the provider's index."""

    def __init__(self, points):
        self.cells = {}
        for lat, lng in points:
            self.cells.setdefault((math.floor(lat), math.floor(lng)), []).append((lat, lng))

    def any_within(self, lat, lng, radius_m):
        # 10 km is under 0.1 degree of latitude; the longitude span grows with latitude.
        dlat = math.degrees(radius_m / EARTH_RADIUS_M) + 1e-6
        dlng = dlat / max(math.cos(math.radians(lat)), 1e-6)
        for row in range(math.floor(lat - dlat), math.floor(lat + dlat) + 1):
            for col in range(math.floor(lng - dlng), math.floor(lng + dlng) + 1):
                col = (col + 180) % 360 - 180
                for plat, plng in self.cells.get((row, col), ()):
                    if distance_m(lat, lng, plat, plng) <= radius_m:
                        return True
        return False


def distance_m(lat1, lng1, lat2, lng2):
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    h = (math.sin((phi2 - phi1) / 2) ** 2
         + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2)
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def land_points(rng, count, south, north, west, east, keep):
    """`count` uniform points on land in the box that `keep(lat, lng)` accepts."""
    points = []
    s, n = math.sin(math.radians(south)), math.sin(math.radians(north))
    while len(points) < count:
        lat = math.degrees(math.asin(rng.uniform(s, n)))
        lng = rng.uniform(west, east)
        if globe.is_land(lat, lng) and keep(lat, lng):
            points.append((lat, lng))
    return points


def main(argv):
    count = int(argv[1]) if len(argv) > 1 else 10_000
    towns_file = argv[2] if len(argv) > 2 else os.path.join(HERE, "places.tsv")
    towns = Grid(read_layer(towns_file))
    both = Grid(read_layer(towns_file) + read_layer(os.path.join(HERE, "airports.tsv")))
    countries = Coordinates2Country()
    rng = random.Random(SEED)
    regions = [
        ("contiguous USA", land_points(
            rng, count, 24.5, 49.4, -124.8, -66.9,
            lambda lat, lng: countries.country_code(lat, lng) == "US")),
        ("worldwide", land_points(rng, count, -90, 90, -180, 180, lambda lat, lng: True)),
    ]
    regions.append(("worldwide without Antarctica",
                    [p for p in regions[1][1] if p[0] > -60]))
    print(f"share of random land points with a place within {RADIUS_M / 1000:g} km"
          f" (seed {SEED}; towns from {os.path.basename(towns_file)})")
    print("| region | points | towns only | towns + airports |")
    print("|---|---:|---:|---:|")
    for name, points in regions:
        hit_towns = sum(towns.any_within(lat, lng, RADIUS_M) for lat, lng in points)
        hit_both = sum(both.any_within(lat, lng, RADIUS_M) for lat, lng in points)
        print(f"| {name} | {len(points):,} | {100 * hit_towns / len(points):.1f}%"
              f" | {100 * hit_both / len(points):.1f}% |")


if __name__ == "__main__":
    main(sys.argv)
