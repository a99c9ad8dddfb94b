"""ADQL's geometry on the sky, as SQLite functions: POINT, CIRCLE, BOX, POLYGON, CONTAINS, INTERSECTS, DISTANCE.

Geometry values travel between SQL functions as STC-S text (``"Position ICRS
10.0 5.0"``, ``"Circle ICRS 10.0 5.0 0.1"``, ``"Polygon ICRS 1 2 3 4 5 6"``,
``"Box ICRS ra dec width height"``), the serialisation TAP services use for
region columns.  Angles are degrees.  Separations are great-circle distances
(haversine, exact for the small radii of cone searches).  The common cone
search ``CONTAINS(POINT(ra, dec), CIRCLE(ra0, dec0, r)) = 1`` never goes through
these functions: :mod:`.adql` rewrites it into SQL arithmetic (:func:`haversine_sql`).
"""

from __future__ import annotations

import functools
import math


class GeometryError(ValueError):
    """A geometry value or combination the local archive does not handle."""


def separation(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance in degrees between two positions in degrees."""
    ra1, dec1, ra2, dec2 = map(math.radians, (ra1, dec1, ra2, dec2))
    hav = math.sin((dec2 - dec1) / 2) ** 2 + math.cos(dec1) * math.cos(dec2) * math.sin((ra2 - ra1) / 2) ** 2
    return math.degrees(2 * math.asin(math.sqrt(min(1.0, max(0.0, hav)))))


def haversine_sql(ra1: str, dec1: str, ra2: str, dec2: str) -> str:
    """SQL for :func:`separation` (degrees) of four SQL expressions, with SQLite's math functions."""
    return (
        f"DEGREES(2 * ASIN(SQRT(MIN(1.0, POWER(SIN(RADIANS(({dec2}) - ({dec1})) / 2), 2) + "
        f"COS(RADIANS({dec1})) * COS(RADIANS({dec2})) * POWER(SIN(RADIANS(({ra2}) - ({ra1})) / 2), 2)))))"
    )


def _stcs(shape: str, frame: str, numbers) -> str:
    return f"{shape} {frame} " + " ".join(repr(float(x)) for x in numbers)


def _frame_and_numbers(args, n: int | None, name: str):
    """ADQL geometry constructors take an optional coordinate-system string first."""
    if args and (isinstance(args[0], str) or args[0] is None) and (n is None or len(args) == n + 1):
        frame, args = (args[0] or "ICRS").strip() or "ICRS", args[1:]
    else:
        frame = "ICRS"
    if any(a is None for a in args):
        return None
    if n is not None and len(args) != n:
        raise GeometryError(f"{name} takes {n} numbers (degrees), got {len(args)}")
    return frame.split()[0], [float(a) for a in args]


def point(*args):
    """``POINT([frame,] ra, dec)``."""
    got = _frame_and_numbers(args, 2, "POINT")
    return None if got is None else _stcs("Position", *got)


def circle(*args):
    """``CIRCLE([frame,] ra, dec, radius)``; also ``CIRCLE(POINT(...), radius)`` (ADQL 2.1)."""
    if len(args) == 2 and isinstance(args[0], str) and args[0].startswith("Position"):
        c = parse(args[0])
        return None if args[1] is None else _stcs("Circle", c[1], [*c[2], args[1]])
    got = _frame_and_numbers(args, 3, "CIRCLE")
    return None if got is None else _stcs("Circle", *got)


def box(*args):
    """``BOX([frame,] ra, dec, width, height)``."""
    got = _frame_and_numbers(args, 4, "BOX")
    return None if got is None else _stcs("Box", *got)


def polygon(*args):
    """``POLYGON([frame,] ra1, dec1, ra2, dec2, ra3, dec3, ...)``."""
    got = _frame_and_numbers(args, None, "POLYGON")
    if got is None:
        return None
    if len(got[1]) < 6 or len(got[1]) % 2:
        raise GeometryError("POLYGON takes at least three vertices, as pairs of numbers (degrees)")
    return _stcs("Polygon", *got)


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> tuple[str, str, tuple[float, ...]]:
    """STC-S text -> (shape, frame, numbers)."""
    words = str(text).split()
    if not words:
        raise GeometryError(f"not a geometry: {text!r}")
    shape = words[0].capitalize()
    rest = words[1:]
    frame = "ICRS"
    if rest and not _is_number(rest[0]):
        frame, rest = rest[0], rest[1:]
    try:
        numbers = tuple(float(x) for x in rest)
    except ValueError:
        raise GeometryError(f"not a geometry: {text!r}") from None
    need = {"Position": 2, "Circle": 3, "Box": 4}.get(shape)
    if (
        (need is not None and len(numbers) != need)
        or (shape == "Polygon" and len(numbers) < 6)
        or shape not in {"Position", "Circle", "Box", "Polygon"}
    ):
        raise GeometryError(f"not a geometry: {text!r}")
    return shape, frame, numbers


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _point_in(ra: float, dec: float, region) -> bool:
    shape, _, v = region
    if shape == "Circle":
        return separation(ra, dec, v[0], v[1]) <= v[2]
    if shape == "Position":
        return separation(ra, dec, v[0], v[1]) == 0.0
    if shape == "Box":
        # a box of width x height degrees centred on (ra, dec): tangent-plane offsets
        dx, dy = _tangent(ra, dec, v[0], v[1])
        return dx is not None and abs(dx) <= v[2] / 2 and abs(dy) <= v[3] / 2
    vertices = [_tangent(v[i], v[i + 1], ra, dec) for i in range(0, len(v), 2)]
    if any(x is None for x, _ in vertices):
        return False
    # winding test around the point, in the tangent plane at the point
    inside = False
    for (x1, y1), (x2, y2) in zip(vertices, vertices[1:] + vertices[:1]):
        if (y1 > 0) != (y2 > 0) and 0 < (x2 - x1) * (0 - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


def _tangent(ra: float, dec: float, ra0: float, dec0: float):
    """Gnomonic offsets (degrees) of (ra, dec) from (ra0, dec0); None on the far hemisphere."""
    ra, dec, ra0, dec0 = map(math.radians, (ra, dec, ra0, dec0))
    cos_c = math.sin(dec0) * math.sin(dec) + math.cos(dec0) * math.cos(dec) * math.cos(ra - ra0)
    if cos_c <= 0:
        return None, None
    x = math.cos(dec) * math.sin(ra - ra0) / cos_c
    y = (math.cos(dec0) * math.sin(dec) - math.sin(dec0) * math.cos(dec) * math.cos(ra - ra0)) / cos_c
    return math.degrees(x), math.degrees(y)


def contains(a, b):
    """``CONTAINS(a, b)``: 1 when geometry ``a`` lies inside ``b``, else 0 (NULL when either is NULL)."""
    if a is None or b is None:
        return None
    ga, gb = parse(a), parse(b)
    if ga[0] == "Position":
        return int(_point_in(*ga[2], gb))
    if ga[0] == "Circle" and gb[0] == "Circle":
        return int(separation(*ga[2][:2], *gb[2][:2]) + ga[2][2] <= gb[2][2])
    raise GeometryError(
        f"CONTAINS({ga[0].upper()}, {gb[0].upper()}) is not supported here; "
        "the first argument must be a POINT (or a CIRCLE inside a CIRCLE)"
    )


def intersects(a, b):
    """``INTERSECTS(a, b)``: 1 when the geometries overlap (points and circles, or a point in any region)."""
    if a is None or b is None:
        return None
    ga, gb = parse(a), parse(b)
    if ga[0] == "Position":
        return int(_point_in(*ga[2], gb))
    if gb[0] == "Position":
        return int(_point_in(*gb[2], ga))
    if ga[0] == "Circle" and gb[0] == "Circle":
        return int(separation(*ga[2][:2], *gb[2][:2]) <= ga[2][2] + gb[2][2])
    raise GeometryError(f"INTERSECTS({ga[0].upper()}, {gb[0].upper()}) is not supported here; use points and circles")


def distance(*args):
    """``DISTANCE(POINT, POINT)`` or ``DISTANCE(ra1, dec1, ra2, dec2)``: degrees."""
    if any(a is None for a in args):
        return None
    if len(args) == 4:
        return separation(*map(float, args))
    if len(args) != 2:
        raise GeometryError("DISTANCE takes two POINTs or four numbers")
    ga, gb = parse(args[0]), parse(args[1])
    if ga[0] != "Position" or gb[0] != "Position":
        raise GeometryError("DISTANCE takes two POINTs")
    return separation(*ga[2], *gb[2])


def coord(index: int):
    def get(value):
        if value is None:
            return None
        shape, _, numbers = parse(value)
        if shape != "Position":
            raise GeometryError(f"COORD{index + 1} takes a POINT, not a {shape.upper()}")
        return numbers[index]

    return get


def coordsys(value):
    """``COORDSYS(geometry)``: its frame, e.g. ``"ICRS"``."""
    return None if value is None else parse(value)[1]


FUNCTIONS = {
    "POINT": (point, -1),
    "CIRCLE": (circle, -1),
    "BOX": (box, -1),
    "POLYGON": (polygon, -1),
    "CONTAINS": (contains, 2),
    "INTERSECTS": (intersects, 2),
    "DISTANCE": (distance, -1),
    "COORD1": (coord(0), 1),
    "COORD2": (coord(1), 1),
    "COORDSYS": (coordsys, 1),
}
"""Name -> (function, number of arguments, -1 for any) to register on a SQLite connection."""
