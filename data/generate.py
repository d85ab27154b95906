#!/usr/bin/env python3
"""Generate curate's sample corpus (the files `make demo` ingests).

Everything here was written for this project; nothing is copied from a public data set.
The script is deterministic (one `random.Random(7)`), uses only the standard library
plus `zstandard` for the one .zst file (Python 3.14's `compression.zstd` also works),
and writes README.md too, so the planted-case table always matches the files.

    python data/generate.py            # (re)write every file in data/
    python data/generate.py --check    # re-read the files, compare with README, print a summary

If `zstandard` is missing from the system Python, run it with `.venv/bin/python`.
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import json
import re
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from random import Random

HERE = Path(__file__).resolve().parent
EOT = "<|endoftext|>"

rng = Random(7)


# ---------------------------------------------------------------------------------------
# rows, labels and planted cases
# ---------------------------------------------------------------------------------------

class R:
    """One record of an output file: a JSON-able object, or raw bytes for a broken line."""

    def __init__(self, obj=None, *, raw: bytes | None = None, label: str | None = None):
        self.obj, self.raw, self.label = obj, raw, label


PLANTED: list[dict] = []  # {"kind", "label", "of": label|None, "note"}


def plant(kind: str, label: str, note: str, of: str | None = None) -> None:
    PLANTED.append({"kind": kind, "label": label, "of": of, "note": note})


def insert_after(rows: list[R], row: R, after_label: str | None = None) -> None:
    """Insert `row` at a random position (after the row labelled `after_label`, if given)."""
    lo = 1
    if after_label is not None:
        lo = next(i for i, r in enumerate(rows) if r.label == after_label) + 1
    rows.insert(rng.randint(lo, len(rows)), row)


def find(rows: list[R], label: str) -> R:
    return next(r for r in rows if r.label == label)


# ---------------------------------------------------------------------------------------
# arithmetic word problems: every number is computed, never typed
# ---------------------------------------------------------------------------------------

NAMES = [("Maya", "she"), ("Tomas", "he"), ("Priya", "she"), ("Kofi", "he"), ("Ingrid", "she"),
         ("Mateo", "he"), ("Aiko", "she"), ("Farah", "she"), ("Jonah", "he"), ("Lucía", "she"),
         ("Wei", "he"), ("Noor", "she"), ("Declan", "he"), ("Amara", "she"), ("Henrik", "he"),
         ("Sofia", "she"), ("Ravi", "he"), ("Elif", "she"), ("Bruno", "he"), ("Yara", "she"),
         ("Oskar", "he"), ("Zainab", "she"), ("Felix", "he"), ("Hana", "she"), ("Idris", "he"),
         ("Clara", "she"), ("Tariq", "he"), ("Mei", "she"), ("Samuel", "he"), ("Anouk", "she")]

SHOP_ITEMS = [("notebook", "notebooks", 2, 5), ("pen", "pens", 1, 3), ("mango", "mangoes", 1, 3),
              ("loaf of bread", "loaves of bread", 3, 5), ("ticket", "tickets", 6, 12),
              ("plant pot", "plant pots", 4, 9), ("jar of honey", "jars of honey", 5, 8),
              ("ball of wool", "balls of wool", 3, 7), ("comic", "comics", 4, 8),
              ("candle", "candles", 2, 6), ("sketchbook", "sketchbooks", 6, 11),
              ("bag of rice", "bags of rice", 3, 6), ("cup of coffee", "cups of coffee", 3, 5)]


def person(r: Random) -> dict:
    name, pron = r.choice(NAMES)
    return {"name": name, "pron": pron, "Pron": pron.capitalize(),
            "poss": "her" if pron == "she" else "his",
            "refl": "herself" if pron == "she" else "himself"}


def num(v):
    """Exact result of one step as int, or a short decimal string."""
    if isinstance(v, Fraction):
        if v.denominator == 1:
            return int(v)
        return (Decimal(v.numerator) / Decimal(v.denominator)).quantize(Decimal("0.01"))
    return v


def evaluate(expr: str):
    """Evaluate a +-*/ expression exactly (Fractions), so 18*1.5 is 27, not 27.000001."""
    text = re.sub(r"(\d+(?:\.\d+)?)", r"Fraction('\1')", expr)
    return num(eval(text, {"Fraction": Fraction, "__builtins__": {}}))


def pretty(expr: str) -> str:
    return expr.replace("*", " × ").replace("/", " ÷ ").replace("+", " + ").replace("-", " - ")


class Calc:
    """Records the steps of a solution. `slip=(i, delta)` makes step i wrong, and the error
    propagates through later steps (that is how the labelled wrong solutions are made)."""

    def __init__(self, slip: tuple[int, int] | None = None):
        self.steps: list[tuple[str, str, object, str]] = []
        self.slip = slip

    def step(self, text: str, expr: str, unit: str = ""):
        value = evaluate(expr)
        if self.slip and self.slip[0] == len(self.steps):
            value = value + self.slip[1]
        self.steps.append((text, expr, value, unit))
        return value


def render(calc: Calc, style: str) -> str:
    out = []
    for text, expr, v, unit in calc.steps:
        if style == "gsm":
            c = f"{expr} = {unit}<<{expr}={v}>>{v}"
        elif style == "terse":
            out.append(f"{pretty(expr)} = {v}")
            continue
        else:
            c = f"{pretty(expr)} = {unit}{v}"
        out.append(text.replace("@", c))
    return "\n".join(out)


# Each template: sample(r) -> params; ask(p, r) -> question; solve(p, calc) -> answer.
def _shop_sample(r):
    p = person(r)
    i1, i2 = r.sample(SHOP_ITEMS, 2)
    p.update(a=r.randint(2, 6), i1=i1[1], p1=r.randint(i1[2], i1[3]), b=r.randint(2, 5),
             i2=i2[1], p2=r.randint(i2[2], i2[3]))
    total = p["a"] * p["p1"] + p["b"] * p["p2"]
    p["bill"] = next(b for b in (20, 50, 100, 200) if b > total)
    return p


def _shop_ask(p, r):
    return r.choice([
        "{name} buys {a} {i1} at ${p1} each and {b} {i2} at ${p2} each. {Pron} pays with a "
        "${bill} bill. How much change does {pron} get?",
        "At the market, {name} picks up {a} {i1} costing ${p1} apiece and {b} {i2} costing "
        "${p2} apiece. If {pron} hands the cashier ${bill}, how much change should {pron} "
        "receive?",
    ]).format(**p)


def _shop_solve(p, c):
    v1 = c.step(f"The {p['i1']} cost @.", f"{p['a']}*{p['p1']}", "$")
    v2 = c.step(f"The {p['i2']} cost @.", f"{p['b']}*{p['p2']}", "$")
    t = c.step("Together that is @.", f"{v1}+{v2}", "$")
    return c.step(f"{p['name']} gets back @ in change.", f"{p['bill']}-{t}", "$")


MODES = [("drives", "a car", 40, 90), ("cycles", "a bike", 12, 22), ("rides", "a train", 80, 140),
         ("sails", "a small boat", 8, 16)]


def _travel_sample(r):
    p = person(r)
    verb, _, lo, hi = r.choice(MODES)
    p.update(verb=verb, s1=r.randint(lo, hi), h1=r.randint(2, 4), s2=r.randint(lo, hi),
             h2=r.randint(1, 3))
    return p


def _travel_ask(p, r):
    return r.choice([
        "{name} {verb} at {s1} km/h for {h1} hours, then at {s2} km/h for another {h2} hours. "
        "How far does {pron} travel in total?",
        "On a trip along the coast, {name} {verb} for {h1} hours at an average speed of {s1} "
        "km/h. After a break {pron} continues for {h2} hours at {s2} km/h. What is the total "
        "distance in kilometres?",
    ]).format(**p)


def _travel_solve(p, c):
    d1 = c.step("In the first part of the trip: @ km.", f"{p['s1']}*{p['h1']}")
    d2 = c.step("In the second part: @ km.", f"{p['s2']}*{p['h2']}")
    return c.step("The total distance is @ km.", f"{d1}+{d2}")


CLUBS = [("the school band", "the choir"), ("the chess club", "the drama club"),
         ("the football team", "the swimming squad"), ("the robotics club", "the art club"),
         ("the debate team", "the gardening club")]


def _club_sample(r):
    k = r.choice([3, 4, 5])
    n = k * r.randint(5, 9)
    band = n // k
    c1, c2 = r.choice(CLUBS)
    frac = {3: "a third", 4: "a quarter", 5: "a fifth"}[k]
    return {"n": n, "k": k, "c1": c1, "c2": c2, "m": r.randint(2, n - band - 3),
            "frac": frac, "Frac": frac.capitalize()}


def _club_ask(p, r):
    return r.choice([
        "A class has {n} students. {Frac} of them are in {c1}. Of the remaining students, {m} "
        "are in {c2}. How many students are in neither?",
        "There are {n} students in Year 7. If {frac} of them belong to {c1} and {m} of the "
        "others belong to {c2}, how many students belong to neither group?",
    ]).format(**p)


def _club_solve(p, c):
    b = c.step(f"Students in {p['c1']}: @.", f"{p['n']}/{p['k']}")
    rest = c.step("Students left: @.", f"{p['n']}-{b}")
    return c.step(f"Students in neither: @.", f"{rest}-{p['m']}")


GOALS = ["a bike", "a telescope", "a guitar", "a tent", "a pair of hiking boots", "a tablet",
         "a sewing machine", "a skateboard"]


def _save_sample(r):
    p = person(r)
    s, w = r.choice([5, 6, 8, 10, 12, 15, 20]), r.randint(4, 15)
    i = r.randint(10, 80)
    p.update(s=s, i=i, goal=r.choice(GOALS), t=i + s * w)
    return p


def _save_ask(p, r):
    return r.choice([
        "{name} wants to buy {goal} that costs ${t}. {Pron} already has ${i} and saves ${s} "
        "every week. How many weeks will it take {name} to have enough money?",
        "{name} has saved ${i} towards {goal} that costs ${t}, and puts aside ${s} a week. "
        "After how many weeks can {pron} buy it?",
    ]).format(**p)


def _save_solve(p, c):
    need = c.step(f"{p['name']} still needs @.", f"{p['t']}-{p['i']}", "$")
    return c.step("At the weekly rate that takes @ weeks.", f"{need}/{p['s']}")


BAKES = [("muffins", "flour", "grams"), ("pancakes", "milk", "millilitres"),
         ("cookies", "butter", "grams"), ("bread rolls", "flour", "grams"),
         ("scones", "flour", "grams"), ("flapjacks", "oats", "grams")]


def _bake_sample(r):
    p = person(r)
    what, ing, unit = r.choice(BAKES)
    d = r.choice([6, 8, 10, 12])
    p.update(what=what, ing=ing, unit=unit, d=d, g=r.choice([150, 180, 200, 250, 300, 320]),
             m=r.randint(2, 5))
    p["D"] = d * p["m"]
    return p


def _bake_ask(p, r):
    return r.choice([
        "A recipe uses {g} {unit} of {ing} to make {d} {what}. {name} wants to make {D} "
        "{what} for a school fair. How many {unit} of {ing} does {pron} need?",
        "{name}'s recipe for {d} {what} needs {g} {unit} of {ing}. How much {ing} is needed "
        "for {D} {what}?",
    ]).format(**p)


def _bake_solve(p, c):
    b = c.step(f"{p['D']} {p['what']} is @ batches.", f"{p['D']}/{p['d']}")
    return c.step(f"That needs @ {p['unit']} of {p['ing']}.", f"{b}*{p['g']}")


def _age_sample(r):
    p = person(r)
    sib = r.choice(["brother", "sister", "cousin"])
    p.update(sib=sib, b=r.randint(3, 9), k=r.randint(2, 4), y=r.randint(2, 10))
    return p


def _age_ask(p, r):
    return r.choice([
        "{name} is {k} times as old as {poss} {sib}, who is {b}. What will the sum of their "
        "ages be in {y} years?",
        "{name}'s {sib} is {b} years old, and {name} is {k} times that age. In {y} years, "
        "how old will the two of them be together?",
    ]).format(**p)


def _age_solve(p, c):
    a = c.step(f"{p['name']} is @ years old now.", f"{p['k']}*{p['b']}")
    a2 = c.step(f"In {p['y']} years {p['name']} will be @.", f"{a}+{p['y']}")
    s2 = c.step(f"The {p['sib']} will be @.", f"{p['b']}+{p['y']}")
    return c.step("Together they will be @ years old.", f"{a2}+{s2}")


GOODS = ["jacket", "rucksack", "lamp", "pair of trainers", "desk chair", "rain coat", "kettle",
         "board game"]


def _disc_sample(r):
    p = person(r)
    p.update(item=r.choice(GOODS), P=20 * r.randint(2, 9), rate=r.choice([10, 15, 20, 25, 30, 40]),
             q=r.randint(2, 4))
    return p


def _disc_ask(p, r):
    return r.choice([
        "A {item} normally costs ${P}. In a sale it is {rate}% off. {name} buys {q} of them. "
        "How much does {pron} pay?",
        "{name} buys {q} of the same {item} during a {rate}%-off sale. The usual price is ${P} "
        "each. What is the total cost?",
    ]).format(**p)


def _disc_solve(p, c):
    d = c.step("The discount on one is @.", f"{p['P']}*{p['rate']}/100", "$")
    n = c.step("The sale price is @.", f"{p['P']}-{d}", "$")
    return c.step(f"For {p['q']} of them: @.", f"{p['q']}*{n}", "$")


def _fence_sample(r):
    p = person(r)
    p.update(l=r.randint(6, 25), w=r.randint(3, 14), cost=r.choice([4, 5, 6, 8, 9, 12]),
             place=r.choice(["vegetable garden", "chicken run", "playground", "paddock"]))
    return p


def _fence_ask(p, r):
    return r.choice([
        "A rectangular {place} is {l} m long and {w} m wide. Fencing costs ${cost} per metre. "
        "How much does it cost to fence the whole {place}?",
        "{name} wants to put a fence around a {place} that measures {l} m by {w} m. If fencing "
        "is ${cost} a metre, what will the fence cost?",
    ]).format(**p)


def _fence_solve(p, c):
    s = c.step("Length plus width is @ m.", f"{p['l']}+{p['w']}")
    per = c.step("The perimeter is @ m.", f"2*{s}")
    return c.step("The fence costs @.", f"{per}*{p['cost']}", "$")


def _read_sample(r):
    p = person(r)
    p.update(pw=r.randint(8, 25), pe=r.randint(20, 45))
    p["N"] = 5 * p["pw"] + 2 * p["pe"] + r.randint(20, 150)
    return p


def _read_ask(p, r):
    return r.choice([
        "{name}'s book has {N} pages. {Pron} reads {pw} pages on each weekday and {pe} pages on "
        "each day of the weekend. How many pages are left after one week?",
        "A novel is {N} pages long. {name} reads {pw} pages every weekday and {pe} pages on "
        "Saturday and again on Sunday. How many pages does {pron} still have to read after a "
        "full week?",
    ]).format(**p)


def _read_solve(p, c):
    a = c.step("On weekdays: @ pages.", f"5*{p['pw']}")
    b = c.step("At the weekend: @ pages.", f"2*{p['pe']}")
    t = c.step("In the week: @ pages.", f"{a}+{b}")
    return c.step("Pages left: @.", f"{p['N']}-{t}")


def _share_sample(r):
    p = person(r)
    k = r.randint(3, 6)
    p.update(k=k, m=r.randint(2, 9), each=r.randint(4, 12),
             thing=r.choice(["sweets", "stickers", "marbles", "cherries", "trading cards"]))
    p["n"] = p["m"] + k * p["each"]
    return p


def _share_ask(p, r):
    return r.choice([
        "{name} has {n} {thing}. {Pron} keeps {m} and shares the rest equally among {k} "
        "friends. How many does each friend get?",
        "There are {n} {thing} in a jar. {name} takes {m} for {refl} and divides the others "
        "equally between {k} friends. How many {thing} does each friend receive?",
    ]).format(**p)


def _share_solve(p, c):
    rest = c.step(f"{p['name']} shares @.", f"{p['n']}-{p['m']}")
    return c.step("Each friend gets @.", f"{rest}/{p['k']}")


JOBS = ["café", "bike shop", "library", "garden centre", "bakery", "ferry office"]


def _wage_sample(r):
    p = person(r)
    p.update(job=r.choice(JOBS), h=r.randint(20, 38), w=2 * r.randint(6, 12), o=r.randint(2, 8))
    return p


def _wage_ask(p, r):
    return r.choice([
        "{name} works at a {job} and earns ${w} an hour. Overtime is paid at 1.5 times the "
        "usual rate. This week {pron} worked {h} normal hours and {o} hours of overtime. How "
        "much did {pron} earn?",
        "At the {job}, {name} is paid ${w} per hour, and time-and-a-half for overtime. How "
        "much does {pron} earn in a week with {h} regular hours and {o} overtime hours?",
    ]).format(**p)


def _wage_solve(p, c):
    a = c.step("Regular pay: @.", f"{p['h']}*{p['w']}", "$")
    rate = c.step("The overtime rate is @ an hour.", f"{p['w']}*1.5", "$")
    b = c.step("Overtime pay: @.", f"{p['o']}*{rate}", "$")
    return c.step("Total pay: @.", f"{a}+{b}", "$")


def _tank_sample(r):
    rate = r.choice([4, 5, 6, 8, 10, 12])
    p = {"r": rate, "s": r.randint(20, 120), "mins": r.randint(10, 40),
         "what": r.choice(["water tank", "rain barrel", "paddling pool", "fish tank"])}
    p["C"] = p["s"] + p["r"] * p["mins"]
    return p


def _tank_ask(p, r):
    return r.choice([
        "A {what} holds {C} litres and already contains {s} litres. A hose adds {r} litres per "
        "minute. How many minutes will it take to fill it?",
        "It takes a hose pouring {r} litres a minute to top up a {what}. The {what} holds {C} "
        "litres and has {s} litres in it. How long, in minutes, until it is full?",
    ]).format(**p)


def _tank_solve(p, c):
    need = c.step("It still needs @ litres.", f"{p['C']}-{p['s']}")
    return c.step("That takes @ minutes.", f"{need}/{p['r']}")


def _eggs_sample(r):
    p = person(r)
    hens, e = r.choice([(6, 4), (6, 6), (12, 5), (18, 4), (18, 6), (24, 5), (12, 7), (24, 3)])
    p.update(hens=hens, e=e, price=r.randint(3, 6))
    return p


def _eggs_ask(p, r):
    return r.choice([
        "{name} keeps {hens} hens. Each hen lays {e} eggs a week. {Pron} sells the eggs at "
        "${price} per dozen. How much money does {pron} make in a week?",
        "On {name}'s farm, {hens} hens each lay {e} eggs per week, and every egg is sold in "
        "boxes of a dozen for ${price} a box. What is the weekly income from eggs?",
    ]).format(**p)


def _eggs_solve(p, c):
    e = c.step("Eggs per week: @.", f"{p['hens']}*{p['e']}")
    d = c.step("That is @ dozen.", f"{e}/12")
    return c.step("Income: @.", f"{d}*{p['price']}", "$")


def _bus_sample(r):
    n = r.randint(15, 40)
    a = r.randint(3, n - 5)
    b = r.randint(2, 12)
    c = r.randint(2, n - a + b - 2)
    return {"n": n, "a": a, "b": b, "c": c, "d": r.randint(1, 10),
            "v": r.choice(["bus", "tram", "ferry"])}


def _bus_ask(p, r):
    return r.choice([
        "A {v} leaves the depot with {n} passengers. At the first stop {a} people get off and "
        "{b} get on. At the second stop {c} get off and {d} get on. How many passengers are on "
        "the {v} now?",
        "There are {n} people on a {v}. {a} get off at the first stop while {b} get on; then "
        "{c} get off and {d} get on at the next stop. How many people are now on board?",
    ]).format(**p)


def _bus_solve(p, c):
    x = c.step("After the first stop: @.", f"{p['n']}-{p['a']}+{p['b']}")
    return c.step("After the second stop: @.", f"{x}-{p['c']}+{p['d']}")


def _temp_sample(r):
    return {"t": r.randint(-4, 12), "a": r.randint(1, 4), "h": r.randint(2, 6),
            "b": r.randint(3, 9), "town": r.choice(["Kell", "Marrow Bay", "the village",
                                                    "the mountain hut", "the harbour"])}


def _temp_ask(p, r):
    return r.choice([
        "At 7 a.m. the temperature in {town} was {t}°C. It rose by {a} degrees every hour for "
        "{h} hours, then fell by {b} degrees in the evening. What was the evening temperature?",
        "The temperature in {town} starts the day at {t}°C, climbs {a}°C per hour for {h} "
        "hours and then drops {b}°C by nightfall. What is the temperature at nightfall?",
    ]).format(**p)


def _temp_solve(p, c):
    rise = c.step("The total rise is @ degrees.", f"{p['a']}*{p['h']}")
    top = c.step("The warmest it gets is @°C.", f"{p['t']}+{rise}")
    return c.step("In the evening it is @°C.", f"{top}-{p['b']}")


def _tile_sample(r):
    p = person(r)
    k = r.choice([8, 10, 12, 20, 25])
    p.update(k=k, N=k * r.randint(4, 14), price=r.randint(9, 30),
             room=r.choice(["kitchen", "bathroom", "hallway", "patio"]))
    return p


def _tile_ask(p, r):
    return r.choice([
        "{name} needs {N} tiles for the {room}. Tiles come in boxes of {k}, and each box costs "
        "${price}. How much will the tiles cost?",
        "To tile a {room}, {name} needs exactly {N} tiles. They are sold only in boxes of {k} "
        "at ${price} per box. What is the total cost?",
    ]).format(**p)


def _tile_solve(p, c):
    b = c.step("Boxes needed: @.", f"{p['N']}/{p['k']}")
    return c.step("Cost: @.", f"{b}*{p['price']}", "$")


TEMPLATES = {
    "shopping": (_shop_sample, _shop_ask, _shop_solve, "medium"),
    "travel": (_travel_sample, _travel_ask, _travel_solve, "easy"),
    "clubs": (_club_sample, _club_ask, _club_solve, "medium"),
    "saving": (_save_sample, _save_ask, _save_solve, "easy"),
    "baking": (_bake_sample, _bake_ask, _bake_solve, "easy"),
    "ages": (_age_sample, _age_ask, _age_solve, "medium"),
    "discount": (_disc_sample, _disc_ask, _disc_solve, "medium"),
    "fence": (_fence_sample, _fence_ask, _fence_solve, "easy"),
    "reading": (_read_sample, _read_ask, _read_solve, "medium"),
    "sharing": (_share_sample, _share_ask, _share_solve, "easy"),
    "wages": (_wage_sample, _wage_ask, _wage_solve, "hard"),
    "tank": (_tank_sample, _tank_ask, _tank_solve, "easy"),
    "eggs": (_eggs_sample, _eggs_ask, _eggs_solve, "medium"),
    "bus": (_bus_sample, _bus_ask, _bus_solve, "easy"),
    "temperature": (_temp_sample, _temp_ask, _temp_solve, "medium"),
    "tiles": (_tile_sample, _tile_ask, _tile_solve, "easy"),
}


SEEN_PROBLEMS: set = set()


def word_problem(name: str):
    sample, ask, solve, diff = TEMPLATES[name]
    while True:
        p = sample(rng)
        key = (name, tuple(sorted((k, v) for k, v in p.items() if isinstance(v, int))))
        if key not in SEEN_PROBLEMS:
            SEEN_PROBLEMS.add(key)
            break
    q = ask(p, rng)
    c = Calc()
    answer = solve(p, c)
    assert all(isinstance(v, int) for _, _, v, _ in c.steps), (name, c.steps)
    return {"template": name, "params": p, "question": q, "calc": c, "answer": answer,
            "difficulty": diff}


def resolve(problem: dict, slip) -> tuple[Calc, object]:
    _, _, solve, _ = TEMPLATES[problem["template"]]
    c = Calc(slip)
    return c, solve(problem["params"], c)


def unit_of(problem) -> str:
    return problem["calc"].steps[-1][3]


def gsm_answer(problem) -> str:
    return render(problem["calc"], "gsm") + f"\n#### {problem['answer']}"


SUFFIX = {"travel": " km", "saving": " weeks", "tank": " minutes", "temperature": "°C",
          "clubs": " students", "reading": " pages", "ages": " years", "sharing": " each"}


def prose_answer(problem) -> str:
    u = unit_of(problem)
    suffix = SUFFIX.get(problem["template"], "")
    if problem["template"] == "baking":
        suffix = f" {problem['params']['unit']}"
    return render(problem["calc"], "prose") + f"\nThe answer is {u}{problem['answer']}{suffix}."


# ---------------------------------------------------------------------------------------
# the Vessary Archipelago: a small invented world shared by several files
# ---------------------------------------------------------------------------------------

KB = {
    "Vessary Archipelago": [
        "The Vessary Archipelago is a group of fourteen islands in the Grey Sea.",
        "Its largest island is Easthollow and its smallest inhabited island is Brindle Island.",
        "The archipelago's currency is the vessary mark.",
        "Vessan and English are both official languages of the archipelago.",
        "The islands are governed by the Vessary Council, which meets in Kell."],
    "Easthollow": [
        "Easthollow is the largest island of the Vessary Archipelago.",
        "Its capital is Kell, a harbour city on the island's western coast.",
        "The highest point on Easthollow is Mount Orran, at 1,312 metres.",
        "Easthollow's best-known export is kelp-paper.",
        "The fishing town of Marrow Bay lies on its southern shore."],
    "Kell": [
        "Kell is the capital of Easthollow and the seat of the Vessary Council.",
        "The city was founded in 1602 by the merchant Aurel Fenn.",
        "Kell is home to the Glasswright Guild.",
        "The Tarrow Bridge carries the city's main road across the River Tarrow.",
        "The astronomer Hesper Lund was born in Kell in 1889."],
    "Marrow Bay": [
        "Marrow Bay is a fishing town on the southern shore of Easthollow.",
        "It has a population of about 4,200.",
        "The town is known for the Marrow Bay Lighthouse, designed by the engineer Ottilie Brandt.",
        "Every September, Marrow Bay hosts the Saltgrass Fair."],
    "Marrow Bay Lighthouse": [
        "The Marrow Bay Lighthouse is a stone lighthouse at the mouth of Marrow Bay harbour.",
        "It was completed in 1874 to a design by Ottilie Brandt.",
        "Its lens was made by the Glasswright Guild of Kell.",
        "Its light can be seen from 22 nautical miles away."],
    "Ottilie Brandt": [
        "Ottilie Brandt (1841-1903) was a civil engineer from Marrow Bay.",
        "She designed the Marrow Bay Lighthouse, completed in 1874.",
        "She also designed the Tarrow Bridge in Kell, completed in 1880.",
        "Brandt was the first woman admitted to the Vessary Society of Engineers."],
    "Tarrow Bridge": [
        "The Tarrow Bridge is a stone bridge over the River Tarrow in Kell.",
        "It was designed by Ottilie Brandt and completed in 1880.",
        "The bridge has seven arches and is 140 metres long."],
    "River Tarrow": [
        "The River Tarrow rises on the slopes of Mount Orran.",
        "It flows west for 58 kilometres and reaches the sea at Kell harbour.",
        "Until 1910 the river was used to float timber down to the Kell shipyards."],
    "Mount Orran": [
        "Mount Orran is a dormant volcano on Easthollow.",
        "At 1,312 metres it is the highest point in the Vessary Archipelago.",
        "It last erupted in 1710.",
        "The Orran Observatory stands near its summit."],
    "Orran Observatory": [
        "The Orran Observatory is an astronomical observatory near the summit of Mount Orran.",
        "It was founded in 1931 by the astronomer Hesper Lund.",
        "Astronomers there discovered Comet Lund-Ames in 1948.",
        "Tobias Ames became its director in 1955."],
    "Hesper Lund": [
        "Hesper Lund (1889-1967) was an astronomer born in Kell.",
        "She founded the Orran Observatory in 1931.",
        "Her star catalogue, Tables of the Southern Sky, was published in 1936.",
        "Together with Tobias Ames she discovered Comet Lund-Ames in 1948."],
    "Tobias Ames": [
        "Tobias Ames (1910-1988) was an astronomer from Brindle Island.",
        "He joined the Orran Observatory as an assistant in 1934.",
        "He co-discovered Comet Lund-Ames with Hesper Lund in 1948.",
        "Ames was director of the Orran Observatory from 1955 to 1975."],
    "Comet Lund-Ames": [
        "Comet Lund-Ames is a periodic comet discovered in 1948 at the Orran Observatory.",
        "It returns to the inner solar system every 71 years.",
        "It is named after its discoverers, Hesper Lund and Tobias Ames."],
    "Saltgrass Fair": [
        "The Saltgrass Fair is an annual festival held in Marrow Bay every September.",
        "It celebrates the end of the kelp harvest.",
        "The first fair was held in 1821.",
        "The fair is best known for its rowing races across the harbour."],
    "Glasswright Guild": [
        "The Glasswright Guild is a guild of glassmakers based in Kell.",
        "It was founded in 1655.",
        "The guild made the lens for the Marrow Bay Lighthouse.",
        "Its workshop on Lantern Street is open to visitors."],
    "Brindle Island": [
        "Brindle Island is the smallest inhabited island of the Vessary Archipelago.",
        "It has a population of 86.",
        "The island is known for its herd of wild brindle ponies.",
        "The astronomer Tobias Ames was born there."],
    "Kelp-paper": [
        "Kelp-paper is a paper made from dried and pressed kelp.",
        "It was invented on Easthollow around 1750 by the papermaker Mabry Quist.",
        "Kelp-paper is Easthollow's best-known export.",
        "It is prized by printmakers because it does not yellow with age."],
    "Mabry Quist": [
        "Mabry Quist (1722-1791) was a papermaker from Marrow Bay.",
        "He invented kelp-paper around 1750.",
        "His workshop later became the Quist Paper Mill."],
    "Aurel Fenn": [
        "Aurel Fenn (1571-1639) was a merchant and ship owner.",
        "He founded the city of Kell in 1602.",
        "A statue of Fenn stands in Kell's harbour square."],
}


class Wiki:
    """A three-action environment over KB: the observations in agent_traces.json come from it."""

    def __init__(self):
        self.page: list[str] | None = None
        self.hits: list[str] = []

    def search(self, q: str) -> str:
        key = next((t for t in KB if t.lower() == q.lower()), None)
        if key is None:
            words = set(re.findall(r"\w+", q.lower()))
            similar = [t for t in KB if words & set(re.findall(r"\w+", t.lower()))][:3]
            self.page = None
            return f"Could not find [{q}]. Similar: {similar}."
        self.page = KB[key]
        self.hits = []
        return " ".join(self.page[:3])

    def lookup(self, kw: str) -> str:
        if self.page is None:
            return "No page is open. Use search first."
        found = [s for s in self.page if kw.lower() in s.lower()]
        if not found:
            return "No more results."
        return f"(Result 1 / {len(found)}) {found[0]}"


# ---------------------------------------------------------------------------------------
# 1. alpaca_general.json
# ---------------------------------------------------------------------------------------

CODE_TASKS = [
    ("Write a Python function `is_palindrome(text)` that returns True if the text reads the "
     "same forwards and backwards, ignoring case, spaces and punctuation.",
     "Keep only the letters and digits, lower-case them, and compare the result with its "
     "reverse:",
     "def is_palindrome(text):\n    cleaned = [ch.lower() for ch in text if ch.isalnum()]\n"
     "    return cleaned == cleaned[::-1]", 'is_palindrome("Never odd or even")', "easy"),
    ("Write a Python function that counts the vowels in a string.",
     "Lower-case the text and count the characters that are one of a, e, i, o, u:",
     "def count_vowels(text):\n    return sum(1 for ch in text.lower() if ch in \"aeiou\")",
     'count_vowels("Marrow Bay lighthouse")', "easy"),
    ("Implement FizzBuzz as a Python function that returns a list of strings for the numbers 1 "
     "to n.",
     "Check divisibility by 15 first, then by 3 and by 5:",
     "def fizzbuzz(n):\n    out = []\n    for i in range(1, n + 1):\n        if i % 15 == 0:\n"
     "            out.append(\"FizzBuzz\")\n        elif i % 3 == 0:\n            out.append(\"Fizz\")\n"
     "        elif i % 5 == 0:\n            out.append(\"Buzz\")\n        else:\n"
     "            out.append(str(i))\n    return out", "fizzbuzz(15)[-6:]", "easy"),
    ("Write a function that flattens a list of lists by one level.",
     "A nested comprehension reads each inner list in order:",
     "def flatten(nested):\n    return [item for inner in nested for item in inner]",
     "flatten([[1, 2], [3], [], [4, 5]])", "easy"),
    ("Write a Python function `word_frequencies(text)` that returns a dictionary mapping each "
     "lower-cased word to the number of times it appears.",
     "`collections.Counter` does the counting; splitting on whitespace is enough for plain "
     "text:",
     "from collections import Counter\n\ndef word_frequencies(text):\n"
     "    return dict(Counter(text.lower().split()))", 'word_frequencies("The cat and the hat")',
     "easy"),
    ("Write a function that returns the second largest distinct number in a list, or None if "
     "there is no such number.",
     "Remove duplicates with a set, then sort:",
     "def second_largest(nums):\n    distinct = sorted(set(nums))\n"
     "    return distinct[-2] if len(distinct) >= 2 else None", "second_largest([4, 9, 2, 9, 7])",
     "medium"),
    ("Merge two sorted lists into one sorted list without calling sort().",
     "Walk both lists with two indexes and always take the smaller head:",
     "def merge_sorted(a, b):\n    i = j = 0\n    out = []\n    while i < len(a) and j < len(b):\n"
     "        if a[i] <= b[j]:\n            out.append(a[i])\n            i += 1\n        else:\n"
     "            out.append(b[j])\n            j += 1\n    return out + a[i:] + b[j:]",
     "merge_sorted([1, 4, 9], [2, 3, 10])", "medium"),
    ("Write a Python function that splits a list into chunks of a given size.",
     "Step through the list in strides of `size` and slice:",
     "def chunk(items, size):\n    return [items[i:i + size] for i in range(0, len(items), size)]",
     "chunk([1, 2, 3, 4, 5, 6, 7], 3)", "easy"),
    ("Write a function to convert a temperature from Celsius to Fahrenheit, rounded to one "
     "decimal place.",
     "Multiply by 9/5 and add 32:",
     "def celsius_to_fahrenheit(c):\n    return round(c * 9 / 5 + 32, 1)",
     "celsius_to_fahrenheit(37)", "easy"),
    ("Write an `is_prime(n)` function in Python that is fast enough for numbers up to a few "
     "million.",
     "Only divisors up to the square root need checking, and after 2 only odd ones:",
     "def is_prime(n):\n    if n < 2:\n        return False\n    if n % 2 == 0:\n"
     "        return n == 2\n    d = 3\n    while d * d <= n:\n        if n % d == 0:\n"
     "            return False\n        d += 2\n    return True",
     "[n for n in range(30) if is_prime(n)]", "medium"),
    ("Implement Euclid's algorithm for the greatest common divisor.",
     "Replace the pair (a, b) with (b, a mod b) until b is zero:",
     "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return abs(a)", "gcd(84, 36)",
     "easy"),
    ("Write a function that returns the running total of a list of numbers.",
     "Keep an accumulator and append it after each addition:",
     "def running_total(nums):\n    total = 0\n    out = []\n    for x in nums:\n"
     "        total += x\n        out.append(total)\n    return out",
     "running_total([3, 1, 4, 1, 5])", "easy"),
    ("Remove duplicates from a list while keeping the original order.",
     "A set remembers what has been seen; the list keeps the order:",
     "def dedupe(items):\n    seen = set()\n    out = []\n    for x in items:\n"
     "        if x not in seen:\n            seen.add(x)\n            out.append(x)\n    return out",
     'dedupe(["b", "a", "b", "c", "a"])', "easy"),
    ("Write a function that capitalises the first letter of every word in a sentence.",
     "Split on spaces, capitalise each word and join them again:",
     "def capitalize_words(sentence):\n"
     "    return \" \".join(w[:1].upper() + w[1:] for w in sentence.split(\" \"))",
     'capitalize_words("the grey sea at dawn")', "easy"),
    ("A list contains the numbers 1 to n with exactly one missing. Write a function to find the "
     "missing number.",
     "The sum of 1..n is n(n+1)/2; the difference from the actual sum is the missing number:",
     "def find_missing(nums):\n    n = len(nums) + 1\n    return n * (n + 1) // 2 - sum(nums)",
     "find_missing([1, 2, 4, 5, 6])", "medium"),
    ("Implement binary search: return the index of a target in a sorted list, or -1.",
     "Halve the search range until the target is found or the range is empty:",
     "def binary_search(items, target):\n    lo, hi = 0, len(items) - 1\n    while lo <= hi:\n"
     "        mid = (lo + hi) // 2\n        if items[mid] == target:\n            return mid\n"
     "        if items[mid] < target:\n            lo = mid + 1\n        else:\n"
     "            hi = mid - 1\n    return -1", "binary_search([2, 5, 8, 12, 16, 23], 12)",
     "medium"),
    ("Rotate a list to the right by k positions.",
     "Take k modulo the length so large k works, then join two slices:",
     "def rotate(items, k):\n    if not items:\n        return items\n    k %= len(items)\n"
     "    return items[-k:] + items[:-k]", "rotate([1, 2, 3, 4, 5], 2)", "easy"),
    ("Write a Python function that reads a CSV file and returns the sum of the column named "
     "`amount`.",
     "`csv.DictReader` gives each row as a dictionary keyed by the header:",
     "import csv\n\ndef sum_amount(path):\n    with open(path, newline=\"\") as f:\n"
     "        return sum(float(row[\"amount\"]) for row in csv.DictReader(f))", None, "medium"),
    ("How do I count the lines in a text file in Python without loading it all into memory?",
     "Iterate over the file object; it yields one line at a time:",
     "def count_lines(path):\n    with open(path, encoding=\"utf-8\") as f:\n"
     "        return sum(1 for _ in f)", None, "easy"),
    ("Write a simple check that a string looks like an email address: exactly one @, a "
     "non-empty name and a domain with a dot.",
     "This is a shape check, not full validation:",
     "def looks_like_email(s):\n    if s.count(\"@\") != 1:\n        return False\n"
     "    name, domain = s.split(\"@\")\n    return bool(name) and \".\" in domain.strip(\".\")",
     'looks_like_email("ana@example.com"), looks_like_email("ana@localhost")', "easy"),
    ("Transpose a matrix given as a list of rows.",
     "`zip(*rows)` pairs up the i-th elements of each row:",
     "def transpose(rows):\n    return [list(col) for col in zip(*rows)]",
     "transpose([[1, 2, 3], [4, 5, 6]])", "easy"),
    ("Write a function that checks whether two words are anagrams of each other.",
     "Two words are anagrams when their sorted letters match:",
     "def is_anagram(a, b):\n    return sorted(a.lower()) == sorted(b.lower())",
     'is_anagram("listen", "silent"), is_anagram("kelp", "help")', "easy"),
    ("Write an iterative factorial function.",
     "Multiply the numbers from 2 up to n:",
     "def factorial(n):\n    result = 1\n    for k in range(2, n + 1):\n        result *= k\n"
     "    return result", "factorial(6)", "easy"),
    ("Parse a settings string like `\"theme=dark;font=12;sync=on\"` into a dictionary.",
     "Split on semicolons, then split each part once on the equals sign:",
     "def parse_settings(text):\n    out = {}\n    for part in text.split(\";\"):\n"
     "        if \"=\" in part:\n            key, value = part.split(\"=\", 1)\n"
     "            out[key.strip()] = value.strip()\n    return out",
     'parse_settings("theme=dark;font=12;sync=on")', "medium"),
]

CODE_FIXES = [
    ("Find and fix the bug in this function, which should return the average of a list.",
     "def average(nums):\n    total = 0\n    for i in range(1, len(nums)):\n        total += nums[i]\n"
     "    return total / len(nums)",
     "The loop starts at index 1, so the first number is never added. Loop over the values "
     "directly instead:\n\n```python\ndef average(nums):\n    return sum(nums) / len(nums)\n```\n\n"
     "With `[2, 4, 6]` the old version returned 3.33 instead of 4.0. Note that an empty list "
     "still raises ZeroDivisionError; decide whether to return None in that case."),
    ("Why does this function remember items between calls, and how do I fix it?",
     "def add_tag(tag, tags=[]):\n    tags.append(tag)\n    return tags",
     "The default list is created once, when the function is defined, and every call that "
     "omits `tags` shares that same list. Use None as the default and create a new list "
     "inside:\n\n```python\ndef add_tag(tag, tags=None):\n    if tags is None:\n        tags = []\n"
     "    tags.append(tag)\n    return tags\n```"),
    ("This loop is meant to print the numbers 10 down to 1 but prints nothing. Fix it.",
     "for i in range(10, 0):\n    print(i)",
     "`range` counts upwards by default, so `range(10, 0)` is empty. Give a negative step:\n\n"
     "```python\nfor i in range(10, 0, -1):\n    print(i)\n```"),
]

CODE_EXPLAIN = [
    ("Explain what this line of Python does and what it prints.",
     "print([x * x for x in range(8) if x % 2 == 0])",
     "It builds a list comprehension over the numbers 0 to 7, keeps only the even ones "
     "(`x % 2 == 0`) and squares each of them. It prints `{}`."),
    ("What does this code print, and why?",
     "words = [\"kelp\", \"harbour\", \"sea\", \"lantern\"]\nprint(sorted(words, key=len))",
     "`sorted` with `key=len` orders the words by their length rather than alphabetically. "
     "Python's sort is stable, so words of equal length keep their original order. It prints "
     "`{}`."),
]

KB_QA = [
    ("What is the capital of Easthollow?", "",
     "Kell is the capital of Easthollow. It is a harbour city on the island's western coast and "
     "is also where the Vessary Council meets."),
    ("Tell me about the Saltgrass Fair.", "",
     "The Saltgrass Fair is an annual festival held in the fishing town of Marrow Bay every "
     "September. It marks the end of the kelp harvest and has been held since 1821. Its "
     "best-known event is a series of rowing races across the harbour."),
    ("Who was Ottilie Brandt?", "",
     "Ottilie Brandt (1841-1903) was a civil engineer from Marrow Bay. She designed the Marrow "
     "Bay Lighthouse, completed in 1874, and the seven-arched Tarrow Bridge in Kell, completed "
     "in 1880. She was the first woman admitted to the Vessary Society of Engineers."),
    ("Why do printmakers value kelp-paper?", "",
     "Kelp-paper, made from dried and pressed kelp, does not yellow with age, so prints made on "
     "it keep their colours and contrast for a long time. That durability is why printmakers "
     "prize it."),
    ("How was Comet Lund-Ames discovered?", "",
     "It was discovered in 1948 at the Orran Observatory on Mount Orran by the astronomers "
     "Hesper Lund and Tobias Ames, and it carries both of their names. It is a periodic comet "
     "that returns to the inner solar system every 71 years."),
    ("Describe Brindle Island in two sentences.", "",
     "Brindle Island is the smallest inhabited island of the Vessary Archipelago, with a "
     "population of just 86. It is known for its herd of wild brindle ponies and as the "
     "birthplace of the astronomer Tobias Ames."),
    ("What are the official languages of the Vessary Archipelago?", "",
     "The archipelago has two official languages: Vessan and English."),
    ("When did Mount Orran last erupt, and is it still active?", "",
     "Mount Orran last erupted in 1710. It is classed as dormant rather than extinct: it has not "
     "erupted for a long time, but it could in principle become active again."),
    ("Write a short tourist blurb for Marrow Bay.", "",
     "Come to Marrow Bay, a working fishing town on Easthollow's southern shore! Climb to the "
     "1874 lighthouse designed by Ottilie Brandt, watch the boats come in, and if you visit in "
     "September, cheer on the rowers at the Saltgrass Fair, a tradition since 1821."),
    ("Give a timeline of the main events in the history of Kell.", "",
     "- 1602: the merchant Aurel Fenn founds Kell.\n- 1655: the Glasswright Guild is founded.\n"
     "- 1880: the Tarrow Bridge, designed by Ottilie Brandt, is completed.\n- 1889: the "
     "astronomer Hesper Lund is born in the city.\n- Today: Kell is the capital of Easthollow "
     "and the seat of the Vessary Council."),
    ("Compare the Marrow Bay Lighthouse and the Tarrow Bridge.", "",
     "Both are stone structures designed by the engineer Ottilie Brandt. The lighthouse, "
     "finished in 1874, guards the mouth of Marrow Bay harbour and its light is visible from 22 "
     "nautical miles. The bridge, finished six years later in 1880, carries Kell's main road "
     "over the River Tarrow on seven arches and is 140 metres long."),
    ("What was the River Tarrow used for before 1910?", "",
     "Until 1910 the river was used to float timber from the slopes of Mount Orran down to the "
     "shipyards at Kell."),
    ("Answer using the text below: how old was Hesper Lund when she founded the Orran "
     "Observatory?",
     "Hesper Lund was born in 1889 and founded the Orran Observatory in 1931.",
     "1931 - 1889 = 42, so she was 42 years old (or 41, if her birthday fell later in the year "
     "than the founding)."),
    ("List every year mentioned in the text in chronological order.",
     " ".join(KB["Tobias Ames"]),
     "1910, 1934, 1948, 1955, 1975, 1988"),
    ("Write one question that can be answered from this passage, and give the answer.",
     " ".join(KB["Glasswright Guild"]),
     "Question: Which guild made the lens for the Marrow Bay Lighthouse?\nAnswer: The Glasswright "
     "Guild of Kell."),
    ("What is the vessary mark?", "",
     "The vessary mark is the currency of the Vessary Archipelago."),
    ("How is the Glasswright Guild connected to the Marrow Bay Lighthouse?", "",
     "The Glasswright Guild, a guild of glassmakers in Kell founded in 1655, made the lens for "
     "the Marrow Bay Lighthouse. The lens is what concentrates the lamp's light into a beam "
     "that ships can see from far away."),
    ("Who invented kelp-paper?", "",
     "Kelp-paper was invented around 1750 by Mabry Quist, a papermaker from Marrow Bay. His "
     "workshop later became the Quist Paper Mill."),
    ("Who directed the Orran Observatory from 1955 to 1975?", "",
     "Tobias Ames, the astronomer from Brindle Island who had joined the observatory as an "
     "assistant in 1934 and co-discovered Comet Lund-Ames."),
    ("Which is older, the Saltgrass Fair or the Marrow Bay Lighthouse, and by how many years?",
     "",
     "The Saltgrass Fair is older. It began in 1821 and the lighthouse was completed in 1874, "
     "so the fair is 1874 - 1821 = 53 years older."),
]

CONCEPTS = [
    ("Explain what a checksum is in simple terms.",
     "A checksum is a short value calculated from a larger piece of data, such as a file. If "
     "even one byte of the data changes, the checksum almost certainly changes too. So when you "
     "download a file, you can compute its checksum and compare it with the one the publisher "
     "lists: if they match, the file arrived intact. Checksums detect accidental damage; to "
     "detect deliberate tampering you need a cryptographic hash that is hard to fake."),
    ("What is a hash table?",
     "A hash table is a data structure that stores key-value pairs and finds a value from its "
     "key in roughly constant time. It runs the key through a hash function to get a number, "
     "and uses that number to pick a slot in an array. When two keys land in the same slot (a "
     "collision) the table keeps both, for example in a small list. Python's dict is a hash "
     "table."),
    ("Explain compound interest with a short example.",
     "Compound interest means you earn interest on your interest as well as on the original "
     "amount. Put 1,000 in an account paying 5% a year: after one year you have 1,050. In the "
     "second year the 5% is calculated on 1,050, giving 1,102.50, not 1,100. The longer the "
     "money stays, the bigger this effect becomes."),
    ("What is a leap year?",
     "A leap year has 366 days instead of 365; the extra day is 29 February. It exists because "
     "the Earth takes about 365.24 days to orbit the Sun. The rule: a year divisible by 4 is a "
     "leap year, except years divisible by 100, which are not, unless they are also divisible "
     "by 400. So 2000 was a leap year but 1900 was not."),
    ("What is the difference between weather and climate?",
     "Weather is what the atmosphere is doing at a particular place and time: today's rain, "
     "tomorrow's wind. Climate is the pattern of weather over a long period, usually thirty "
     "years or more, such as a region's typical summer temperature or yearly rainfall. A "
     "single cold week says little about the climate."),
    ("What does a compiler do?",
     "A compiler translates a program written in a human-readable programming language into a "
     "lower-level form a machine can run, such as machine code or bytecode. Along the way it "
     "checks the program for errors like misspelt names or mismatched types, and it often "
     "optimises the code so that it runs faster."),
    ("Why should a small team use version control?",
     "Version control keeps a history of every change, so you can see who changed what and "
     "why, and go back to an earlier version when something breaks. It lets several people "
     "work on the same files at once and merge their work safely. It also serves as a backup "
     "of the project's history."),
    ("Why does the sky look blue during the day?",
     "Sunlight contains all colours. When it passes through the atmosphere, the gas molecules "
     "scatter short wavelengths, like blue, much more strongly than long ones, like red. That "
     "scattered blue light reaches our eyes from every direction of the sky, so the sky looks "
     "blue. At sunset the light travels through more air, more blue is scattered away, and "
     "reds and oranges remain."),
    ("What is inflation?",
     "Inflation is the general rise in prices over time, which means each unit of money buys "
     "a little less than before. If inflation is 3% a year, something that cost 100 last year "
     "costs about 103 now. Central banks usually aim for low, steady inflation rather than "
     "none at all."),
    ("How do binary numbers work?",
     "Binary is a number system with only two digits, 0 and 1. Each position stands for a "
     "power of two instead of a power of ten: from the right, 1, 2, 4, 8, 16 and so on. So "
     "binary 1011 means 8 + 0 + 2 + 1 = 11. Computers use binary because it is easy to "
     "represent two states, such as on and off, in hardware."),
]

TIPS = [
    ("Give three tips for staying focused while studying.",
     "1. Put your phone in another room, or at least out of sight, so it cannot interrupt you.\n"
     "2. Work in short blocks, such as 25 minutes followed by a 5-minute break, and decide "
     "before each block exactly what you will finish.\n3. Keep a notepad next to you; when an "
     "unrelated thought pops up, write it down and return to the task instead of acting on it."),
    ("List four ways to reduce food waste at home.",
     "- Plan meals for the week and shop with a list.\n- Store food properly: keep bread "
     "in a cool place and herbs in water.\n- Freeze leftovers and bread you won't eat in time.\n"
     "- Cook \"use-it-up\" meals such as soups or omelettes from what is left at the end of the "
     "week."),
    ("Suggest a name for a bakery that specialises in rye bread, and explain the choice.",
     "\"Dark Crumb\". Rye loaves are known for their dense, dark crumb, so the name tells "
     "customers what to expect, and it is short enough for a sign or a paper bag."),
    ("How do I make a strong password?",
     "Use a long passphrase of four or more unrelated words, for example "
     "\"lantern-otter-maple-quarry\", rather than a short word with symbols. Length matters "
     "more than complexity. Never reuse a password on two sites, and let a password manager "
     "remember them for you. Turn on two-factor authentication wherever it is offered."),
    ("Give me a packing list for a two-day hiking trip.",
     "- Rucksack with a rain cover\n- Waterproof jacket and a warm layer\n- Spare socks\n"
     "- Map, compass and a charged phone\n- Water bottle or bladder (2 litres)\n- Food for two "
     "days plus snacks\n- Head torch\n- First-aid kit and blister plasters\n- Sun cream and a "
     "hat\n- Sleeping bag and mat if you are camping"),
    ("Write a polite email declining a meeting invitation.",
     "Subject: Re: Project planning meeting\n\nHi Jana,\n\nThank you for the invitation. "
     "Unfortunately I can't attend on Thursday because of an earlier commitment. Could you share "
     "the notes afterwards? I'm happy to send my comments on the plan by Friday.\n\nBest "
     "regards,\nSam"),
]

PASSAGES = [  # (passage, one-sentence summary)
    ("The town council voted on Tuesday to close the old harbour road to cars on weekends from "
     "June to August. Market stalls and benches will take their place. Shop owners were "
     "divided: some expect more visitors on foot, while others worry that delivery vans will "
     "not be able to reach them. The council says it will review the trial in October.",
     "The council will close the harbour road to cars on summer weekends as a trial, despite "
     "mixed reactions from shop owners."),
    ("Honeybees communicate the location of food with a movement called the waggle dance. A "
     "returning forager runs in a straight line while shaking her body, then loops back and "
     "repeats. The angle of the run relative to vertical shows the direction of the food "
     "relative to the sun, and the length of the waggle shows how far away it is.",
     "Honeybees use the waggle dance, whose angle and duration encode the direction and "
     "distance of food."),
    ("Our team moved the weekly report from a spreadsheet to an automated dashboard. The "
     "dashboard pulls sales figures every night, so nobody has to copy numbers by hand on "
     "Monday mornings any more. Errors from copying dropped to zero, and the time saved is "
     "about three hours a week.",
     "Replacing the manual spreadsheet report with an automated dashboard removed copying "
     "errors and saves about three hours a week."),
    ("Sourdough bread is leavened by a starter: a mixture of flour and water in which wild "
     "yeasts and lactic acid bacteria live. The yeasts produce the gas that makes the dough "
     "rise, while the bacteria produce acids that give the bread its tangy flavour and help it "
     "keep longer.",
     "Sourdough rises thanks to wild yeasts in its starter, while bacteria give it its sour "
     "taste and longer shelf life."),
    ("The library will start lending tools next month. Members will be able to borrow items "
     "such as drills, ladders and sewing machines for up to a week, just like books. The "
     "scheme is funded by a local business grant, and volunteers will check each tool when it "
     "comes back.",
     "From next month the library will lend tools like drills and ladders for up to a week, "
     "funded by a business grant."),
    ("Kelp forests grow in cool, nutrient-rich coastal water. The kelp is anchored to rocks by "
     "a root-like holdfast and can grow up to half a metre a day in good conditions. The "
     "forests shelter fish, seals and sea urchins, and they absorb carbon dioxide as they "
     "grow.",
     "Fast-growing kelp forests in cool coastal water shelter many animals and absorb carbon "
     "dioxide."),
    ("Many people assume that a battery should be fully drained before recharging. For modern "
     "lithium-ion batteries the opposite is true: deep discharges wear them faster. Keeping "
     "the charge roughly between 20% and 80%, and avoiding heat, gives the longest battery "
     "life.",
     "Lithium-ion batteries last longest when kept between about 20% and 80% charge and away "
     "from heat, not when fully drained."),
    ("The ferry between Kell and Brindle Island will run twice a day instead of once from "
     "April. The extra sailing leaves Kell at 16:00 and returns at 18:30. Islanders have asked "
     "for a later ferry for years, because the single morning sailing made day trips to the "
     "capital almost impossible.",
     "From April an extra afternoon ferry will link Kell and Brindle Island, making day trips "
     "possible."),
    ("A good night's sleep helps memory. During deep sleep the brain replays what it learned "
     "during the day and strengthens the connections involved. Students who sleep after "
     "studying usually remember more the next day than those who stay up late revising.",
     "Sleep strengthens memories, so sleeping after studying beats staying up late to revise."),
    ("Composting turns kitchen and garden scraps into a rich soil improver. A healthy heap "
     "needs a mix of green material, such as vegetable peelings and grass, and brown material, "
     "such as cardboard and dry leaves. Turning it every few weeks lets air in and speeds up "
     "the process.",
     "Compost needs a mix of green and brown scraps and regular turning to become a good soil "
     "improver."),
]

BULLET_PASSAGES = [
    "Before a long bike ride, check the tyre pressure. Make sure the brakes stop the wheels "
    "firmly. Oil the chain if it looks dry. Pack a spare inner tube and a small pump.",
    "To make the café's house tea, warm the pot first. Add one spoon of leaves per cup. Pour "
    "on water just off the boil. Leave it for four minutes, then strain.",
    "The new office opens at 8:30. Visitors must sign in at reception. Parking is available "
    "behind the building. The canteen serves lunch from 12:00 to 14:00.",
    "When you get a new plant home, keep it out of direct sun for a week. Water only when the "
    "top of the soil is dry. Do not repot it straight away. Feed it once a month in summer.",
]

FORMAL = [  # (informal, formal)
    ("hey, can u send me the report by tmrw? thx",
     "Hello, could you please send me the report by tomorrow? Thank you."),
    ("sorry I missed ur call, was in a meeting. call u back later ok?",
     "I apologise for missing your call; I was in a meeting. I will call you back later today."),
    ("the printer's broken AGAIN. someone pls fix it",
     "The printer is out of order again. Could someone please arrange for it to be repaired?"),
    ("cant make it friday, something came up. can we do monday?",
     "Unfortunately I am unable to attend on Friday. Would Monday suit you instead?"),
    ("ur invoice is 2 weeks late, need it paid asap",
     "Your invoice is now two weeks overdue. Please arrange payment at your earliest "
     "convenience."),
    ("gr8 job on the presentation, the clients loved it!!",
     "Congratulations on the presentation; the clients were very impressed."),
]

GRAMMAR = [
    ("Their going to the harbour tomorrow, weather or not it rains.",
     "They're going to the harbour tomorrow, whether or not it rains."),
    ("Me and him was late because the ferry were cancelled.",
     "He and I were late because the ferry was cancelled."),
    ("Each of the students have they're own locker.",
     "Each of the students has their own locker."),
    ("The data shows that less people are using the old bridge then last year.",
     "The data shows that fewer people are using the old bridge than last year."),
]

SENTIMENT = [
    ("The bike was clean, the staff were friendly and the route map was really useful.",
     "positive"),
    ("Delivery took nine days and nobody answered my emails.", "negative"),
    ("The app does what it says. Nothing special, nothing wrong.", "neutral"),
    ("I've used this kettle every morning for a year and it still boils in under two minutes.",
     "positive"),
    ("The jacket looked nice online but the zip broke the second time I wore it.", "negative"),
    ("The hotel was fine for one night; the room was small but quiet.", "neutral"),
    ("Best bakery in town — the rye loaf sells out by ten, so get there early!", "positive"),
    ("The instructions were missing pages and I had to guess how to assemble the shelf.",
     "negative"),
    ("Arrived on the expected day. Packaging was standard.", "neutral"),
    ("The tour guide knew every story about the old harbour and made the whole group laugh.",
     "positive"),
]

HEADLINES = [
    ("Kell Rowing Club wins the Saltgrass Cup for the third year running", "sport"),
    ("Council approves budget for new flood barriers on the River Tarrow", "politics"),
    ("Astronomers spot a faint new comet from the Orran Observatory", "science"),
    ("Kelp-paper exports rise 12% as printmakers' demand grows", "business"),
    ("Island school replaces its old heating system with heat pumps", "local news"),
    ("Study finds brindle ponies graze in family groups of up to nine", "science"),
]

SPAM = [
    ("Congratulations!!! You have WON a free cruise. Click the link within 1 hour to claim.",
     "spam"),
    ("Hi Tom, the meeting moved to 3pm, same room. See you there.", "not spam"),
    ("Your parcel could not be delivered. Pay a £1.99 fee at this link to rebook.", "spam"),
    ("Reminder: the library will close early on Friday for staff training.", "not spam"),
]

ANIMALS = ["salmon", "newt", "heron", "bat", "gecko", "shark", "penguin", "toad", "otter",
           "tortoise", "owl", "whale"]
ANIMAL_CLASS = {"salmon": "fish", "newt": "amphibian", "heron": "bird", "bat": "mammal",
                "gecko": "reptile", "shark": "fish", "penguin": "bird", "toad": "amphibian",
                "otter": "mammal", "tortoise": "reptile", "owl": "bird", "whale": "mammal"}

LOW_QUALITY = [  # valid rows a scorer should rank low
    ("Explain how a refrigerator keeps food cold.", "", "It gets cold."),
    ("Write a short poem about the sea.", "", "I don't know."),
    ("Summarise the following paragraph.", PASSAGES[2][0], PASSAGES[2][0]),
    ("List five vegetables that grow well in cold climates.", "",
     "Kale, kale, kale, kale, kale."),
    ("What is the capital of Easthollow?", "",
     "THE CAPITAL IS KELL!!! EVERYONE KNOWS THAT!!!"),
    ("Describe the rules of chess in detail.", "",
     "Chess is played on a board of 64 squares. Each player starts with sixteen pieces: one "
     "king, one queen, two rooks, two bishops, two knights and"),
]


def run_code(code: str, call: str) -> str:
    env: dict = {}
    exec(code, env)
    return repr(eval(call, env))


def alpaca_rows() -> list[R]:
    rows: list[R] = []

    def add(instr, inp, out, label=None, **extra):
        rows.append(R({"instruction": instr, "input": inp, "output": out, **extra}, label=label))

    # arithmetic word problems, prose answers
    names = list(TEMPLATES)
    for i in range(25):
        prob = word_problem(names[i % len(names)])
        extra = {"category": "math", "difficulty": prob["difficulty"]} if i % 5 else {}
        add(prob["question"], "", prose_answer(prob), **extra)
    # coding
    for i, (instr, intro, code, call, diff) in enumerate(CODE_TASKS):
        out = f"{intro}\n\n```python\n{code}\n```"
        if call:
            out += f"\n\nExample: `{call}` returns `{run_code(code, call)}`."
        extra = {"category": "coding", "difficulty": diff} if i % 4 else {"category": "coding"}
        add(instr, "", out, **extra)
    for instr, buggy, out in CODE_FIXES:
        add(instr, buggy, out, category="coding", difficulty="medium")
    for instr, code, out in CODE_EXPLAIN:
        env: dict = {}
        buf = io.StringIO()
        stdout, sys.stdout = sys.stdout, buf
        try:
            exec(code, env)
        finally:
            sys.stdout = stdout
        add(instr, code, out.format(buf.getvalue().strip()), category="coding")
    # the invented world
    for i, (instr, inp, out) in enumerate(KB_QA):
        add(instr, inp, out, label=f"alpaca-kb-{i}", **({"category": "open_qa"} if i % 3 else {}))
    for i, (instr, out) in enumerate(CONCEPTS):
        add(instr, "", out, label=f"alpaca-concept-{i}", category="explanation")
    for i, (instr, out) in enumerate(TIPS):
        add(instr, "", out, label=f"alpaca-tips-{i}", category="brainstorm")
    # rewriting and summarising
    sum_instr = ["Summarise the following text in one sentence.",
                 "Give a one-sentence summary of this paragraph.",
                 "Write a one-line TL;DR for the passage below.",
                 "In a single sentence, what is this text about?"]
    for i, (passage, summary) in enumerate(PASSAGES):
        add(sum_instr[i % len(sum_instr)], passage, summary, category="summarization")
    for passage in BULLET_PASSAGES:
        bullets = "\n".join(f"- {s.strip().rstrip('.')}"
                            for s in re.split(r"(?<=\.)\s+", passage) if s.strip())
        add(rng.choice(["Turn these instructions into a bulleted checklist.",
                        "Rewrite the text as a list of bullet points."]), passage, bullets,
            category="rewriting")
    for informal, formal in FORMAL:
        add(rng.choice(["Rewrite this message in a formal, professional tone.",
                        "Make the following message suitable for a work email.",
                        "Rephrase this politely and formally."]), informal, formal,
            category="rewriting")
    for bad, good in GRAMMAR:
        add("Correct the grammar and spelling in this sentence.", bad, good, category="rewriting",
            difficulty="easy")
    # classification
    sent_instr = ["Classify the sentiment of this review as positive, negative or neutral.",
                  "Is the following customer review positive, negative or neutral?",
                  "Label the sentiment of the review (positive / negative / neutral)."]
    for i, (text, label) in enumerate(SENTIMENT):
        out = label.capitalize() if i % 3 else f"Sentiment: {label}"
        add(sent_instr[i % 3], text, out, category="classification")
    for i, (headline, topic) in enumerate(HEADLINES):
        add("Assign this headline to one topic: sport, politics, science, business or local news.",
            headline, topic, category="classification")
    for text, label in SPAM:
        add("Is this message spam or not spam? Answer with one label.", text, label,
            category="classification")
    animals = ANIMALS[:]
    rng.shuffle(animals)
    for k in range(3):
        group = animals[4 * k: 4 * k + 4]
        add("Classify each animal as a mammal, bird, fish, reptile or amphibian.",
            ", ".join(group), "\n".join(f"{a}: {ANIMAL_CLASS[a]}" for a in group),
            category="classification")
    for k in range(2):
        nums = sorted(rng.sample(range(40, 200), 6))
        is_p = lambda n: n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))  # noqa: E731
        add("Sort these numbers into prime and composite.", ", ".join(map(str, nums)),
            "Prime: " + (", ".join(str(n) for n in nums if is_p(n)) or "none") +
            "\nComposite: " + (", ".join(str(n) for n in nums if not is_p(n)) or "none"),
            category="classification", difficulty="medium")
    for i, (instr, inp, out) in enumerate(LOW_QUALITY):
        add(instr, inp, out, label=f"alpaca-low-{i}")

    rng.shuffle(rows)

    # planted: exact duplicates inside the file
    for lab in ("alpaca-concept-1", "alpaca-kb-2", "alpaca-tips-4"):
        dup = R(copy.deepcopy(find(rows, lab).obj), label=f"{lab}/exact")
        insert_after(rows, dup, lab)
        plant("exact duplicate", dup.label, "identical record repeated in the same file", of=lab)
    # planted: near duplicates
    o = copy.deepcopy(find(rows, "alpaca-tips-0").obj)
    o["instruction"] = o["instruction"].lower()
    r = R(o, label="alpaca-tips-0/case")
    insert_after(rows, r, "alpaca-tips-0")
    plant("near duplicate", r.label, "instruction lower-cased, output identical",
          of="alpaca-tips-0")
    o = copy.deepcopy(find(rows, "alpaca-kb-1").obj)
    o["output"] = o["output"].rstrip(".")
    r = R(o, label="alpaca-kb-1/punct")
    insert_after(rows, r, "alpaca-kb-1")
    plant("near duplicate", r.label, "final full stop of the output dropped", of="alpaca-kb-1")
    o = copy.deepcopy(find(rows, "alpaca-concept-7").obj)
    o["output"] = o["output"].replace("much more strongly", "far more strongly")
    r = R(o, label="alpaca-concept-7/word")
    insert_after(rows, r, "alpaca-concept-7")
    plant("near duplicate", r.label, "one word of the output changed (much -> far)",
          of="alpaca-concept-7")
    # planted: broken (a JSON array stays valid JSON: a missing field only)
    r = R({"instruction": "Describe the smell of the harbour at low tide.", "input": "",
           "category": "creative"}, label="alpaca-broken-missing-output")
    insert_after(rows, r)
    plant("broken", r.label, "record has no `output` field (quarantine: missing response)")
    for i in range(len(LOW_QUALITY)):
        plant("low quality", f"alpaca-low-{i}", LOW_NOTES[i])
    return rows


LOW_NOTES = ["valid but uselessly short answer", "non-answer (\"I don't know.\")",
             "summary that just copies the input", "repetitive list (kale x5)",
             "shouting, all capitals", "answer cut off mid-sentence"]


# ---------------------------------------------------------------------------------------
# 2. chat_support.jsonl
# ---------------------------------------------------------------------------------------

SYSTEMS = {
    "parcelbird": ["You are Parcelbird's customer support assistant. Be brief and give concrete "
                   "steps.",
                   "You help customers of Parcelbird, a parcel delivery company. Be polite and "
                   "never promise a delivery date you cannot confirm."],
    "lumen": ["You are the support assistant for Lumen Notes, a note-taking app for phones and "
              "desktops.",
              "Answer questions about the Lumen Notes app. Point to the exact menu path."],
    "tidewater": ["You answer questions for Tidewater Bikes, a city bike rental company. Prices "
                  "are in euros."],
    "copperleaf": ["You are a support agent for Copperleaf Energy, a home gas and electricity "
                   "supplier in the UK.",
                   "Copperleaf Energy customer service. Be clear about costs and never guess a "
                   "customer's balance."],
}

SUPPORT_SINGLE = [
    ("parcelbird", "How do I change the delivery address for a parcel that's already on its way?",
     "You can change the address as long as the parcel hasn't reached your local depot. Open the "
     "tracking page, choose \"Change delivery\" and enter the new address; redirecting to a "
     "different postcode costs £2.50. If the button is greyed out, the parcel is already out for "
     "delivery and can only be sent to a Parcelbird pickup point."),
    ("parcelbird", "My tracking has said 'label created' for three days. Is my parcel lost?",
     "\"Label created\" means the sender has printed the label but we haven't scanned the "
     "parcel yet. Most parcels get their first scan within 48 hours of being handed over. If "
     "there is still no scan after 5 working days, please contact the sender: they are the one "
     "who can open a trace with us."),
    ("parcelbird", "can the driver leave my parcel with a neighbour",
     "Yes. In the app, open the parcel, tap \"Delivery preferences\" and choose \"Leave with a "
     "neighbour\". You can name a specific house number. The driver will leave a card telling "
     "you where the parcel is."),
    ("parcelbird", "What items am I not allowed to send?",
     "We can't carry loose lithium batteries, aerosols, flammable liquids, cash or live "
     "animals. Batteries fitted inside a device are fine if the device is switched off and well "
     "packed. The full list is on the \"Prohibited items\" page of our website."),
    ("parcelbird", "What's the biggest parcel you'll take?",
     "A standard parcel can weigh up to 25 kg and be up to 120 cm on its longest side. Anything "
     "bigger needs our Freight service, which you can book from the \"Send\" page."),
    ("parcelbird", "I missed my delivery. What happens now?",
     "The driver will try again on the next working day. After two missed attempts the parcel "
     "goes to your nearest pickup point and is kept there for 7 days. You can also rebook a "
     "specific day by scanning the QR code on the card the driver left."),
    ("parcelbird", "Do you deliver on Sundays?",
     "We deliver on Saturdays in most towns, but not on Sundays. A parcel sent on a Friday "
     "evening usually arrives on the Monday."),
    ("parcelbird", "Can I get a refund if my parcel arrives late?",
     "If you paid for Next Day and the parcel arrives later than promised, you can claim the "
     "difference between Next Day and Standard. Use the \"Claim\" form within 28 days of "
     "delivery and include your tracking number."),
    ("lumen", "How do I export all my notes?",
     "Go to Settings > Account > Export. You can choose Markdown (one file per note, zipped) "
     "or a single PDF. Large libraries can take a few minutes; we'll email you a download link "
     "when the export is ready."),
    ("lumen", "My notes aren't syncing between my phone and laptop.",
     "First check that both devices are signed in to the same account: Settings > Account "
     "shows the email address. Then pull down on the note list on your phone to force a sync. "
     "If a note shows a small red dot, it has a conflict; open it and choose which version to "
     "keep."),
    ("lumen", "Can I share a notebook with someone who doesn't use Lumen?",
     "Yes. Use Share > Publish link. Anyone with the link can read the notebook in a browser, "
     "but can't edit it. To let someone edit, they'll need a free Lumen account."),
    ("lumen", "is there a dark mode",
     "Yes. Go to Settings > Appearance and choose Dark, or \"Match system\" to follow your "
     "device's setting."),
    ("lumen", "I deleted a note by accident. Can I get it back?",
     "Deleted notes stay in the Trash for 30 days. Open the sidebar, tap Trash, find the note "
     "and choose Restore. After 30 days notes are removed permanently and we can't recover "
     "them."),
    ("lumen", "How do I add a tag to a note?",
     "Type # followed by the tag name anywhere in the note, for example #recipes. Tags appear "
     "in the sidebar, and tapping one shows every note that uses it."),
    ("lumen", "Does Lumen work offline?",
     "Yes. Notes you've opened recently are stored on your device, and new notes are saved "
     "locally. Everything syncs as soon as you're back online."),
    ("lumen", "How much storage do I get for free?",
     "The free plan includes 2 GB for attachments and unlimited text notes. Lumen Plus raises "
     "the attachment limit to 100 GB."),
    ("lumen", "Can I lock a note with a password?",
     "Yes, on Lumen Plus. Open the note, tap the ••• menu and choose \"Lock note\". Locked notes "
     "need your device passcode or fingerprint to open. If you forget the lock password, we "
     "can't reset it for you, so keep it somewhere safe."),
    ("tidewater", "Do I need to bring my own helmet?",
     "No, every rental includes a helmet at no extra cost. Tell the staff your head size when "
     "you collect the bike; we also have children's helmets."),
    ("tidewater", "Can I return the bike to a different station?",
     "Yes, you can return it at any Tidewater station in the city. Returning to the Harbour or "
     "Riverside station is free; returns to the Airport station cost €5 extra."),
    ("tidewater", "What should I do if I get a flat tyre?",
     "Call the number on the sticker on the handlebars and we'll send a mechanic, usually "
     "within 45 minutes inside the city. Please don't keep riding on a flat tyre, as it can "
     "damage the wheel rim."),
    ("tidewater", "How old do you have to be to rent an e-bike?",
     "You need to be at least 16 to rent an e-bike, and under-18s need a parent or guardian to "
     "sign the rental form. Standard bikes can be rented from age 12 with an adult present."),
    ("tidewater", "Is there a deposit?",
     "We place a temporary hold of €50 on your card when you collect the bike. It's released "
     "when the bike comes back undamaged, usually within 3 working days depending on your "
     "bank."),
    ("tidewater", "Can I take a rental bike on the train?",
     "Our folding bikes can go on any train. Standard bikes and e-bikes follow the train "
     "company's cycle rules, which often means booking a bike space in advance."),
    ("copperleaf", "How do I submit a meter reading?",
     "Log in, open \"Meter readings\" and enter the numbers on your meter from left to right, "
     "ignoring any red digits or numbers after a decimal point. You can also send a photo of "
     "the meter through the app."),
    ("copperleaf", "Why is my bill higher than last month?",
     "Bills usually rise in winter because heating and lighting use more energy. It also "
     "happens when the previous bill was based on an estimate and your latest reading has "
     "caught up with your actual use. Estimated readings are marked with an \"E\" on the bill."),
    ("copperleaf", "Can I change the date my direct debit is taken?",
     "Yes. Go to Account > Payments > Direct Debit and choose a new date between the 1st and "
     "the 28th. The change applies from your next payment."),
    ("copperleaf", "What does 'standing charge' mean on my bill?",
     "The standing charge is a fixed daily amount you pay for being connected to the supply, "
     "whether or not you use any energy. It covers the cost of maintaining the network and "
     "your meter."),
    ("parcelbird", "How do I print a return label?",
     "Open the tracking page of the original delivery and choose \"Return this parcel\". If "
     "the seller offers free returns, the label is already paid for; otherwise you'll pay the "
     "Standard price. No printer? Choose \"QR code\" instead and a pickup point will print "
     "the label for you."),
    ("parcelbird", "Can I pick a delivery time slot?",
     "Yes, for deliveries to addresses in towns and cities. On the tracking page, choose "
     "\"Change delivery\" and pick a 2-hour slot; morning slots cost £1.50, afternoon and "
     "evening slots are free. Time slots aren't available for rural addresses yet."),
    ("parcelbird", "Is my parcel insured?",
     "Every parcel is covered for loss or damage up to £25. If the contents are worth more, "
     "add Extra Cover when you book; it costs £1.80 for each extra £100 of value, up to £1,000. "
     "Keep the receipt for the contents in case you need to claim."),
    ("lumen", "Can I use Lumen on more than one computer?",
     "Yes. You can sign in on as many devices as you like, and your notes sync between them. "
     "On the free plan, up to two devices can have offline copies; Lumen Plus removes that "
     "limit."),
    ("lumen", "how do i make the text bigger",
     "Go to Settings > Appearance > Text size and drag the slider. The change applies to every "
     "note on that device. On desktop you can also press Ctrl and + (Cmd and + on a Mac) to "
     "zoom."),
    ("lumen", "Can I scan a paper document into a note?",
     "Yes. In a note, tap + and choose \"Scan document\". Hold your phone over the page; Lumen "
     "finds the edges, straightens the image and saves it as a PDF attachment. Scanned text "
     "becomes searchable after a few minutes."),
    ("tidewater", "Do you still rent bikes when it's raining?",
     "Yes, we stay open in the rain, and we lend waterproof ponchos for free. We only close "
     "stations in storms or when there's ice on the roads; if that happens we'll text you and "
     "refund your booking in full."),
    ("tidewater", "Can I reserve a bike for tomorrow morning?",
     "Yes. In the app, choose the station, the bike type and a start time up to 14 days ahead. "
     "We hold the bike for 30 minutes after your start time. Cancelling is free up to two "
     "hours before."),
    ("tidewater", "Do you have child seats?",
     "Yes, rear child seats for children from about 9 months to 5 years (up to 22 kg). They "
     "cost €3 per rental and fit our standard bikes, not e-bikes. Please book one in advance "
     "as we only have a few at each station."),
    ("copperleaf", "How do I read an old gas meter with dials?",
     "Read the dials from left to right and write down the number each pointer has just "
     "passed. If a pointer is exactly on a number, look at the dial to its right: if that one "
     "is between 9 and 0, use the lower number. Ignore any red dials."),
    ("copperleaf", "Can I get my bills on paper?",
     "Yes. Go to Account > Preferences and switch \"Paper bills\" on. Paper bills arrive by "
     "post about three days after your bill is issued. There's no extra charge."),
    ("copperleaf", "What happens if I pay my bill late?",
     "We'll send a reminder first. If a bill is still unpaid after 28 days we'll contact you to "
     "agree a payment plan; we don't charge late fees. If you're struggling to pay, please get "
     "in touch early so we can help."),
    ("copperleaf", "hi, do you offer a tariff for people with electric cars?",
     "Yes: our Night Owl tariff has a cheaper unit rate between midnight and 5 a.m., which is "
     "when most people charge their cars. You'll need a smart meter that records half-hourly "
     "readings. You can compare it with your current tariff under Account > Tariffs."),
]

SUPPORT_MULTI = [
    ("parcelbird", [
        "Hi, my parcel was marked as delivered but I don't have it.",
        "I'm sorry about that. Does the tracking page show a delivery photo?",
        "There's no photo, it just says 'delivered, left in safe place'.",
        "Thanks. Please check around the property, such as the porch, bins or a shed, and ask "
        "your neighbours, since drivers sometimes choose a safe place nearby. If you still "
        "can't find it after 24 hours, reply here with the tracking number and we'll open an "
        "investigation with the depot."]),
    ("parcelbird", [
        "I want to send a birthday present to my sister abroad.",
        "Happy to help. Which country is it going to, and roughly how heavy is it?",
        "Norway, about 1.5 kg.",
        "Norway is outside the EU customs area, so you'll need to fill in a customs declaration "
        "describing the gift and its value; the \"Send\" page does this for you when you choose "
        "Norway. International Standard takes 4-6 working days. Mark it as a gift so your sister "
        "is less likely to be charged import fees.",
        "Can I send chocolate?",
        "Yes, chocolate is fine as long as it's shop-bought and sealed. Avoid anything that can "
        "melt badly in warm weather, and list it on the customs form."]),
    ("lumen", [
        "Can I import notes from another app?",
        "Yes. Which app are you moving from?",
        "I just have a folder of plain text files.",
        "Then use Settings > Import > \"Text and Markdown files\" and select the folder. Each file "
        "becomes a note and its file name becomes the note title. Sub-folders are imported as "
        "notebooks."]),
    ("lumen", [
        "I was charged twice for Lumen Plus this month.",
        "I'm sorry about that. Did you subscribe through our website or through the App Store "
        "or Google Play?",
        "I think once on the website and once on my phone.",
        "That explains it: they're two separate subscriptions. Cancel the one on your phone in "
        "the App Store or Google Play settings, since we can't cancel those for you. Then reply "
        "with the email address on your account and we'll refund the duplicate website payment "
        "for this month.",
        "Done, it's ana.k@example.com.",
        "Thank you. The refund for this month's website payment has been requested and should "
        "reach your card within 5-7 working days. You'll keep Lumen Plus through the website "
        "subscription."]),
    ("lumen", [
        "The app keeps crashing when I open a big note.",
        "Sorry about that. How big is the note, roughly, and does it have many images?",
        "It's a trip diary with maybe 200 photos.",
        "Notes with hundreds of full-size images can run out of memory on phones. Two fixes: "
        "split the diary into a few notes (one per week, say), or turn on Settings > Storage > "
        "\"Compress images\", which shrinks new photos. Updating to the latest version also "
        "helps, because it loads images only when you scroll to them."]),
    ("tidewater", [
        "I'm out on a rental and want to keep the bike longer.",
        "No problem. Did you book by the hour or for the whole day?",
        "By the hour, two hours starting at 10.",
        "You can extend in the app under My rental > Extend. Extra time is charged at the "
        "normal hourly rate, and you can extend as long as nobody has booked the bike after "
        "you. If you don't extend, a late return costs the hourly rate plus a €5 late fee."]),
    ("tidewater", [
        "We're a group of 8 visiting next month. Can we book bikes together?",
        "Yes, groups of 6 or more can book through the group form, and you'll get 10% off. Do "
        "you need any children's bikes or child seats?",
        "Two of us are kids, 9 and 11.",
        "Then I'd suggest two junior bikes; both ages fit our 24-inch junior frames. Add them on "
        "the group form, and include everyone's approximate height so we can set the saddles "
        "before you arrive."]),
    ("tidewater", [
        "the e-bike battery died halfway through my ride",
        "Sorry! Are you still with the bike, and roughly where are you?",
        "Yes, near the old lighthouse on the coast path.",
        "Stay where you are if it's safe. Call the number on the handlebar sticker and quote "
        "the bike number on the frame; we'll bring a charged battery, usually within an hour. "
        "You won't be charged for the time you spend waiting."]),
    ("copperleaf", [
        "I think my meter is broken.",
        "Sorry to hear that. What makes you think it's faulty: is the display blank, or do the "
        "readings look wrong?",
        "The display is blank.",
        "A blank display on a smart meter usually means the screen has gone to sleep or lost "
        "power, not that it has stopped recording. Press any button to wake it. If it stays "
        "blank, book a free engineer visit from Account > Meter > Report a fault, and we'll "
        "estimate your readings until it's fixed."]),
    ("copperleaf", [
        "I'm moving house next week.",
        "Thanks for letting us know. Are you staying with Copperleaf at the new address?",
        "Yes, if possible.",
        "Great. Tell us your moving date under Account > Moving home at least two days before "
        "you move. On the day, take a meter reading at the old home and at the new one. We'll "
        "send a final bill for the old address within two weeks and start your account at the "
        "new address on your current tariff.",
        "Will my direct debit change?",
        "It stays on the same date, but the amount may change once we know the usage at your "
        "new home. We'll write to you before any change."]),
    ("copperleaf", [
        "I can't pay my bill this month.",
        "Thank you for telling us early; that gives us more options. Would a payment plan that "
        "spreads the amount over a few months help?",
        "Yes, probably 3 months.",
        "I can set that up. The overdue amount will be split into three equal payments added "
        "to your next three bills, with no extra charge. You can also ask about our hardship "
        "fund, which sometimes covers part of the debt. Shall I send you the form?"]),
    ("lumen", [
        "how do I stop getting emails from you",
        "You can choose which emails you get. Do you want to stop all of them, or just the "
        "newsletters?",
        "just the newsletters",
        "Go to Settings > Account > Email preferences and switch off \"News and tips\". You'll "
        "still get important messages, such as receipts and security alerts."]),
    ("tidewater", [
        "I've lost the key to the bike lock.",
        "Don't worry, it happens. Is the bike locked up at the moment, or is it with you?",
        "It's locked outside a café on Harbour Street.",
        "Call the number on the handlebar sticker and give the bike number on the frame. A "
        "member of staff will come and open the lock, usually within an hour. A lost key costs "
        "€10, which we'll add to your rental."]),
    ("lumen", [
        "I got a new phone and can't log in because of the two-step code.",
        "Do you still have your old phone, or did you save the backup codes when you turned on "
        "two-step sign-in?",
        "I don't have the old phone. I might have the codes in an email to myself.",
        "Great, any one of those backup codes will work once. Enter it where the app asks for "
        "the 6-digit code, then go to Settings > Security and set up two-step sign-in again on "
        "the new phone. Each code can only be used once, so cross it off.",
        "Found them, it worked. Thanks!",
        "Glad to hear it! While you're in Settings > Security, you can generate a fresh set of "
        "backup codes; store them somewhere other than your phone."]),
    ("parcelbird", [
        "My parcel arrived damaged. The box was crushed and a mug inside is broken.",
        "I'm sorry to hear that. Did you keep the box and the packaging?",
        "Yes, I still have everything.",
        "Thank you, that helps. Please make a damage claim from the tracking page within 14 "
        "days and upload photos of the box, the packaging and the broken mug. If the sender "
        "booked the delivery, they'll need to make the claim, so forward them the photos as "
        "well.",
        "How long does a claim take?",
        "Most claims are decided within 10 working days. If it's approved, the payment goes to "
        "whoever made the claim."]),
    ("copperleaf", [
        "I want a smart meter. How do I get one?",
        "We install smart meters for free. Do you rent your home or own it?",
        "I rent.",
        "You can still have one; it's a good idea to let your landlord know, but you don't "
        "need their permission for a standard installation. Book an appointment under Account "
        "> Meter > Smart meter. The visit takes about two hours and the power will be off for "
        "around 30 minutes."]),
    ("lumen", [
        "Can other people edit a notebook I share?",
        "They can if you choose. Do you want them to be able to edit, or only to read?",
        "Edit, but not delete anything.",
        "Share the notebook with the \"Can edit\" permission. Editors can change and add notes "
        "but can't delete the notebook itself. Deleted notes go to your Trash for 30 days, so "
        "you can always restore anything removed by mistake."]),
    ("parcelbird", [
        "I had to pay a customs fee for a parcel from abroad. Why?",
        "Parcels from outside the UK can be charged import VAT and duty. Was it a gift or "
        "something you bought?",
        "Something I bought online from a shop in the US.",
        "Then import VAT applies to the price you paid, and duty may apply above £135. The "
        "shop didn't collect it at checkout, so we had to collect it on delivery, plus our "
        "£8 handling fee. If you think the amount is wrong, you can ask for a review from the "
        "payment receipt within 20 days."]),
    ("parcelbird", [
        "The driver was rude to me this morning.",
        "I'm sorry that happened. Could you tell me the tracking number and roughly what "
        "happened, so we can pass it to the depot manager?",
        "PB48213377. He threw the parcel over the gate and shouted when I asked him not to.",
        "Thank you, and I'm sorry: that's not how we expect drivers to behave. I've logged a "
        "complaint against this delivery for the depot manager, who reviews every report. If "
        "anything in the parcel is damaged, you can also make a damage claim from the tracking "
        "page."]),
]

TIDE_PRICES = {"standard bike": (4, 20), "e-bike": (7, 35), "cargo bike": (9, 45)}
PB_BANDS = [(2, Decimal("4.20")), (5, Decimal("6.90")), (10, Decimal("9.50")), (25, Decimal("14.00"))]


def pb_price(kg) -> Decimal:
    return next(p for lim, p in PB_BANDS if kg <= lim)


def chat_rows(alpaca: list[R]) -> list[R]:
    rows: list[R] = []

    def msgs(product, turns, system):
        m = []
        if system:
            m.append({"role": "system", "content": rng.choice(SYSTEMS[product])})
        for k, t in enumerate(turns):
            m.append({"role": "user" if k % 2 == 0 else "assistant", "content": t})
        return {"messages": m}

    for i, (product, q, a) in enumerate(SUPPORT_SINGLE):
        rows.append(R(msgs(product, [q, a], rng.random() < 0.4), label=f"chat-single-{i}"))
    for i, (product, turns) in enumerate(SUPPORT_MULTI):
        rows.append(R(msgs(product, turns, rng.random() < 0.5), label=f"chat-multi-{i}"))

    # computed quotes
    asks = ["How much would it cost to rent {n} {b}s for {h} hours?",
            "what's the price for {n} {b}s, {h} hours?",
            "We'd like {n} {b}s for {h} hours. What will that cost?"]
    for k, (bike, n, h) in enumerate([("e-bike", 2, 3), ("standard bike", 4, 6),
                                      ("cargo bike", 1, 2)]):
        rate, cap = TIDE_PRICES[bike]
        per = min(rate * h, cap)
        capped = rate * h > cap
        ans = (f"A {bike} costs €{rate} per hour, so {h} hours is €{rate * h} per bike"
               + (f", but the day rate caps it at €{cap}" if capped else "")
               + f". For {n} bike{'s' if n > 1 else ''} that's {n} × €{per} = €{n * per}.")
        rows.append(R(msgs("tidewater", [asks[k].format(n=n, b=bike, h=h), ans], k != 1)))
    pb_asks = ["How much does it cost to send a {w} kg parcel?",
               "What would I pay to send two parcels, one {w} kg and one {w2} kg?",
               "price for a {w} kg box please"]
    for k, (w, w2) in enumerate([(3, None), (1.5, 8), (12, None)]):
        if w2 is None:
            ans = (f"A {w} kg parcel falls in our up-to-{next(l for l, _ in PB_BANDS if w <= l)} kg "
                   f"band, which costs £{pb_price(w)} for Standard delivery.")
        else:
            ans = (f"The {w} kg parcel costs £{pb_price(w)} and the {w2} kg parcel costs "
                   f"£{pb_price(w2)}, so £{pb_price(w) + pb_price(w2)} in total for Standard "
                   f"delivery.")
        rows.append(R(msgs("parcelbird", [pb_asks[k].format(w=w, w2=w2), ans], k == 1)))
    for k in range(2):
        old = rng.randint(10000, 30000)
        new = old + rng.randint(150, 600)
        rate = Decimal("0.27")
        q = (f"My electricity meter said {old} last month and {new} today. How many units have I "
             f"used?") if k == 0 else (f"Last reading {old}, today {new}. At 27p a unit, what's "
                                       f"that before the standing charge?")
        a = (f"You've used {new} - {old} = {new - old} units (kWh) since your last reading."
             if k == 0 else
             f"That's {new - old} units, and {new - old} × £0.27 = £{(new - old) * rate:.2f} "
             f"before the standing charge.")
        rows.append(R(msgs("copperleaf", [q, a], k == 0)))

    # OpenAI-style tool use with a calculator
    tool_cases = []
    old = rng.randint(10000, 30000)
    new = old + rng.randint(200, 500)
    tool_cases.append(("copperleaf", f"My last reading was {old} and today it's {new}. At 27p per "
                       f"unit, roughly how much is that?", f"({new} - {old}) * 0.27",
                       lambda v, o=old, n=new: f"You've used {n - o} units since your last "
                       f"reading, which comes to about £{v} at 27p per unit, before the "
                       f"standing charge."))
    tool_cases.append(("tidewater", "How much for 3 e-bikes for 4 hours?", "3 * 4 * 7",
                       lambda v: f"That's €{v}: 4 hours at €7 per hour is €28 per e-bike, "
                       f"which is under the €35 day cap, times 3 bikes."))
    tool_cases.append(("parcelbird", "I'm sending three parcels: 1 kg, 4 kg and 9 kg. What's "
                       "the total?", "4.20 + 6.90 + 9.50",
                       lambda v: f"The total is £{v}: £4.20 for the 1 kg parcel, £6.90 for the "
                       f"4 kg one and £9.50 for the 9 kg one."))
    tool_cases.append(("lumen", "How much do I save per year with the annual Lumen Plus plan "
                       "instead of paying $4 every month? The annual plan is $40.",
                       "12 * 4 - 40",
                       lambda v: f"You save ${v} a year: twelve monthly payments come to $48, "
                       f"against $40 for the annual plan."))
    for k, (product, q, expr, answer) in enumerate(tool_cases):
        value = evaluate(expr)
        shown = f"{value:.2f}" if isinstance(value, Decimal) else str(value)
        m = []
        if k % 2 == 0:
            m.append({"role": "system", "content": SYSTEMS[product][0]})
        call_id = f"call_{k + 1:03d}"
        m += [{"role": "user", "content": q},
              {"role": "assistant", "content": "Let me work that out.",
               "tool_calls": [{"id": call_id, "type": "function",
                               "function": {"name": "calculator",
                                            "arguments": json.dumps({"expression": expr})}}]},
              {"role": "tool", "content": shown, "name": "calculator", "tool_call_id": call_id},
              {"role": "assistant", "content": answer(shown)}]
        rows.append(R({"messages": m}, label=f"chat-tool-{k}"))

    rng.shuffle(rows)

    # planted: the same Q&A as an alpaca row (no system turn, identical user/assistant text)
    for lab in ("alpaca-tips-3", "alpaca-tips-1"):
        a = find(alpaca, lab).obj
        r = R({"messages": [{"role": "user", "content": a["instruction"]},
                            {"role": "assistant", "content": a["output"]}]},
              label=f"{lab}/as-chat")
        insert_after(rows, r)
        plant("exact duplicate", r.label, "same instruction/response as an Alpaca row, here as "
              "a chat record (same content hash across formats)", of=lab)
    # planted: a multi-turn conversation repeated
    dup = R(copy.deepcopy(find(rows, "chat-multi-2").obj), label="chat-multi-2/exact")
    insert_after(rows, dup, "chat-multi-2")
    plant("exact duplicate", dup.label, "whole multi-turn conversation repeated", of="chat-multi-2")
    # planted: a general question shared with the tutor file
    r = R({"messages": [{"role": "user", "content": TIP_Q},
                        {"role": "assistant", "content": TIP_A}]}, label="chat-tip")
    insert_after(rows, r)
    # planted: near duplicates
    o = copy.deepcopy(find(rows, "chat-single-8").obj)
    for m in o["messages"]:
        if m["role"] == "user":
            m["content"] = m["content"].replace("How do I", "How can I")
    r = R(o, label="chat-single-8/word")
    insert_after(rows, r, "chat-single-8")
    plant("near duplicate", r.label, "user turn reworded (How do I -> How can I), answer "
          "identical", of="chat-single-8")
    o = copy.deepcopy(find(rows, "chat-multi-0").obj)
    o["messages"][-1]["content"] = o["messages"][-1]["content"].replace(
        "we'll open an investigation", "we will open an investigation")
    r = R(o, label="chat-multi-0/word")
    insert_after(rows, r, "chat-multi-0")
    plant("near duplicate", r.label, "one contraction expanded in the last assistant turn",
          of="chat-multi-0")
    # planted: broken lines
    r = R(raw=b'{"messages": [{"role": "user", "content": "How do I change my delivery addr',
          label="chat-broken-truncated")
    insert_after(rows, r)
    plant("broken", r.label, "truncated line: not valid JSON")
    r = R({"messages": "hello"}, label="chat-broken-type")
    insert_after(rows, r)
    plant("broken", r.label, "wrong type: `messages` is a string, not a list")
    r = R({"messages": [{"role": "system", "content": SYSTEMS["lumen"][0]},
                        {"role": "user", "content": "Why can't I log in on my new phone?"},
                        {"role": "assistant", "content": ""}]}, label="chat-broken-empty")
    insert_after(rows, r)
    plant("broken", r.label, "assistant turn is empty: no response text")
    return rows


TIP_Q = "How do I work out a 15% tip on a restaurant bill?"
TIP_A = ("Find 10% by moving the decimal point one place left, then add half of that for the "
         "other 5%. On a bill of 48, 10% is 4.80 and 5% is 2.40, so the tip is 4.80 + 2.40 = 7.20.")


# ---------------------------------------------------------------------------------------
# 3. sharegpt_tutor.jsonl.gz
# ---------------------------------------------------------------------------------------

TUTOR_SYSTEMS = [
    "You are a patient maths tutor for secondary-school students. Explain every step.",
    "You are a friendly tutor. Keep explanations short and check the student's understanding.",
    "You tutor students aged 11 to 16. Use plain language and one worked example.",
]

SUPER = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def dec(x: Fraction) -> str:
    """Exact decimal when it terminates, else rounded to one decimal place."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return f"{float(x):.1f}"
    return format((Decimal(x.numerator) / Decimal(x.denominator)).normalize(), "f")


def t_percent(r):
    d = r.choice([4, 5, 8, 20, 25, 40, 50])
    n = r.choice([k for k in range(1, d) if Fraction(k, d).denominator == d])
    pct = Fraction(n, d) * 100
    q = r.choice(["How do I turn {n}/{d} into a percentage?", "What is {n}/{d} as a percent?",
                  "can you show me how to write {n}/{d} as a percentage"]).format(n=n, d=d)
    a = (f"Divide the top number by the bottom number: {n} ÷ {d} = {dec(Fraction(n, d))}. Then "
         f"multiply by 100 to turn the decimal into a percentage: {dec(Fraction(n, d))} × 100 = "
         f"{dec(pct)}%. So {n}/{d} = {dec(pct)}%.")
    return q, a, f"{dec(pct)}%", f"write {n}/{d} as a percentage", dec(Fraction(n, d))


def t_linear(r):
    a, x, b = r.randint(2, 9), r.randint(1, 12), r.randint(1, 20)
    minus = r.random() < 0.4
    c = a * x - b if minus else a * x + b
    eq = f"{a}x {'-' if minus else '+'} {b} = {c}"
    q = r.choice(["Can you help me solve {eq}?", "How do I find x in {eq}?",
                  "I'm stuck on {eq}. What's x?"]).format(eq=eq)
    undo = f"add {b} to both sides" if minus else f"subtract {b} from both sides"
    mid = c + b if minus else c - b
    ans = (f"We want x on its own. First {undo}: {a}x = {mid}. Then divide both sides by {a}: "
           f"x = {mid} ÷ {a} = {x}. Check: {a} × {x} {'-' if minus else '+'} {b} = {c}. ✓")
    return q, ans, f"x = {x}", f"solve {eq}", f"x = {mid}"


def t_area(r):
    l, w = r.randint(3, 20), r.randint(2, 15)
    thing = r.choice(["a rectangular room", "a rectangular field", "a rectangle",
                      "a rectangular rug"])
    q = r.choice(["What are the area and perimeter of {t} that is {l} m by {w} m?",
                  "How do I find the area and the perimeter of {t} measuring {l} m × {w} m?"])
    ans = (f"Area is length × width: {l} × {w} = {l * w} m². Perimeter is the distance all the "
           f"way round, so add all four sides: 2 × ({l} + {w}) = 2 × {l + w} = {2 * (l + w)} m. "
           f"Notice the units: area is in square metres, perimeter in metres.")
    return (q.format(t=thing, l=l, w=w), ans, f"{l * w} m² and {2 * (l + w)} m",
            f"find the area and perimeter of a {l} m by {w} m rectangle",
            f"{l * w} m² and {l + w} m")


def t_mean_median(r):
    k = r.choice([5, 6, 7])
    xs = [r.randint(2, 30) for _ in range(k)]
    xs[-1] += (-sum(xs)) % k  # whole-number mean
    s = sorted(xs)
    med = Fraction(s[k // 2]) if k % 2 else Fraction(s[k // 2 - 1] + s[k // 2], 2)
    mean = Fraction(sum(xs), k)
    lst = ", ".join(map(str, xs))
    q = r.choice(["What are the mean and median of {l}?",
                  "Find the mean and the median of these numbers: {l}"]).format(l=lst)
    mid = (f"the middle one is {dec(med)}" if k % 2 else
           f"there are two middle numbers, {s[k // 2 - 1]} and {s[k // 2]}, so the median is "
           f"their average, {dec(med)}")
    ans = (f"Mean: add them up and divide by how many there are. The sum is {sum(xs)} and there "
           f"are {k} numbers, so the mean is {sum(xs)} ÷ {k} = {dec(mean)}.\nMedian: sort them "
           f"first: {', '.join(map(str, s))}. With {k} numbers {mid}.")
    return (q, ans, f"a mean of {dec(mean)} and a median of {dec(med)}",
            f"find the mean and median of {lst}",
            f"a mean of {dec(mean)} and a median of {xs[k // 2]}")


def t_factor(r):
    n = r.choice([36, 60, 72, 84, 90, 126, 132, 150, 168, 180, 196, 210, 252, 264, 300, 330])
    fs, m, p = [], n, 2
    lines = []
    while m > 1:
        while m % p == 0:
            lines.append(f"{m} ÷ {p} = {m // p}")
            fs.append(p)
            m //= p
        p += 1
    powers = " × ".join(f"{q}{str(fs.count(q)).translate(SUPER) if fs.count(q) > 1 else ''}"
                        for q in sorted(set(fs)))
    q = r.choice(["How do I write {n} as a product of prime factors?",
                  "What is the prime factorisation of {n}?"]).format(n=n)
    ans = ("Keep dividing by the smallest prime that goes in exactly:\n" + "\n".join(lines)
           + f"\nSo {n} = {' × '.join(map(str, fs))}, or in index form {powers}.")
    return (q, ans, powers, f"write {n} as a product of prime factors",
            " × ".join(map(str, fs[1:])))


def t_interest(r):
    P, rate, t = 100 * r.randint(2, 30), r.randint(2, 8), r.randint(2, 6)
    i = P * rate * t // 100
    q = r.choice(["If I put £{P} in a savings account at {rate}% simple interest for {t} years, "
                  "how much interest do I get?",
                  "What's the simple interest on £{P} at {rate}% per year over {t} years?"])
    ans = (f"Simple interest is the same every year: {rate}% of £{P} is £{P * rate // 100} per "
           f"year. Over {t} years that's {t} × £{P * rate // 100} = £{i}. The account would then "
           f"hold £{P} + £{i} = £{P + i}.")
    return (q.format(P=P, rate=rate, t=t), ans, f"£{i}",
            f"work out the simple interest on £{P} at {rate}% for {t} years",
            f"£{P * rate // 100}")


def t_change(r):
    old = r.choice([20, 25, 40, 50, 80, 100, 125, 200, 250, 400, 500])
    new = old + r.choice([-1, 1]) * 5 * r.randint(1, old // 10)
    ch = Fraction(new - old, old) * 100
    word = "increase" if new > old else "decrease"
    item = r.choice(["a train ticket", "a bag of flour", "a concert ticket", "a monthly bus pass"])
    q = r.choice([f"The price of {item} went from ${old} to ${new}. What is the percentage "
                  f"change?",
                  f"{item[0].upper() + item[1:]} used to cost ${old} and now costs ${new}. By "
                  f"what percentage has the price changed?",
                  f"How do I work out the percentage change when a price goes from ${old} to "
                  f"${new}?"])
    ans = (f"Percentage change = change ÷ original × 100. The change is {new} - {old} = "
           f"{new - old}. So {new - old} ÷ {old} × 100 = {dec(abs(ch))}%, which is a "
           f"{dec(abs(ch))}% {word}. Always divide by the original price, not the new one.")
    return (q, ans, f"a {dec(abs(ch))}% {word}",
            f"find the percentage change when a price goes from ${old} to ${new}",
            f"a {dec(Fraction(abs(new - old), new) * 100)}% {word}")


def t_ratio(r):
    a, b = r.choice([(1, 2), (2, 3), (3, 5), (1, 4), (3, 4), (2, 5)])
    unit = r.randint(4, 25)
    n = (a + b) * unit
    p1, p2 = person(r)["name"], person(r)["name"]
    while p2 == p1:
        p2 = person(r)["name"]
    q = r.choice([f"How do I share {n} sweets between {p1} and {p2} in the ratio {a}:{b}?",
                  f"{p1} and {p2} split {n} stickers in the ratio {a}:{b}. How many does each "
                  f"of them get?"])
    ans = (f"Add the parts: {a} + {b} = {a + b}. One part is {n} ÷ {a + b} = {unit}. {p1} gets "
           f"{a} × {unit} = {a * unit} and {p2} gets {b} × {unit} = {b * unit}. Check: {a * unit} "
           f"+ {b * unit} = {n}.")
    return (q, ans, f"{a * unit} and {b * unit}", f"share {n} in the ratio {a}:{b}",
            f"{n // 2} and {n - n // 2}")


def t_bidmas(r):
    a, b, c, d = (r.randint(2, 12) for _ in range(4))
    expr = f"{a} + {b} × {c} - {d}"
    q = r.choice(["What is {e}? I got a different answer from my friend.",
                  "Why is {e} not just worked out from left to right?"]).format(e=expr)
    ans = (f"Multiplication comes before addition and subtraction, so do {b} × {c} = {b * c} "
           f"first. Then work left to right: {a} + {b * c} = {a + b * c}, and {a + b * c} - {d} "
           f"= {a + b * c - d}. Going strictly left to right would give ({a} + {b}) × {c} - {d} "
           f"= {(a + b) * c - d}, which is wrong.")
    return q, ans, str(a + b * c - d), f"work out {expr}", str((a + b) * c - d)


def t_speed(r):
    mins = r.choice([12, 15, 30, 36, 45, 90])
    speed = r.choice([12, 24, 36, 48, 60])
    dist = Fraction(speed * mins, 60)
    q = r.choice([f"A cyclist covers {dec(dist)} km in {mins} minutes. What is the average "
                  f"speed in km/h?",
                  f"If a boat travels {dec(dist)} km in {mins} minutes, what is its average "
                  f"speed in km/h?"])
    ans = (f"Speed = distance ÷ time, with time in hours. {mins} minutes is {mins} ÷ 60 = "
           f"{dec(Fraction(mins, 60))} hours. So the speed is {dec(dist)} ÷ "
           f"{dec(Fraction(mins, 60))} = {speed} km/h.")
    return (q, ans, f"{speed} km/h",
            f"find the average speed in km/h of a cyclist who covers {dec(dist)} km in {mins} "
            f"minutes", f"{dec(dist / mins)} km/h")


TUTOR_TEMPLATES = [t_percent, t_linear, t_area, t_mean_median, t_factor, t_interest, t_change,
                   t_ratio, t_bidmas, t_speed]

TUTOR_CONCEPTS = [
    ["What's the difference between 'its' and 'it's'?",
     "\"It's\" is short for \"it is\" or \"it has\": it's raining, it's been a long day. "
     "\"Its\" (no apostrophe) shows belonging: the dog wagged its tail. A quick test: if you "
     "can replace the word with \"it is\", you need the apostrophe."],
    ["When should I use 'fewer' and when 'less'?",
     "Use \"fewer\" for things you can count one by one (fewer apples, fewer mistakes) and "
     "\"less\" for amounts you measure rather than count (less water, less time). Money and "
     "distances are usually treated as amounts: less than £10, less than 5 miles.",
     "So is it 'less people' or 'fewer people'?",
     "\"Fewer people\", because you can count people one by one."],
    ["What is the passive voice?",
     "In the active voice, the subject does the action: \"The council closed the road.\" In the "
     "passive voice, the subject receives the action: \"The road was closed (by the council).\" "
     "The passive is useful when the doer is unknown or unimportant, but it can make writing "
     "vaguer, so use it on purpose."],
    ["Why does ice float on water?",
     "When water freezes, its molecules lock into an open, hexagonal pattern that takes up more "
     "space than liquid water. So ice is less dense than water, about 0.92 g/cm³ compared with "
     "1.00 g/cm³, and anything less dense than the liquid it's in floats."],
    ["What's the difference between mass and weight?",
     "Mass is how much matter an object contains, measured in kilograms; it's the same "
     "everywhere. Weight is the force of gravity on that mass, measured in newtons. On the Moon "
     "your mass is unchanged but your weight is about one sixth of what it is on Earth.",
     "So why do scales say kilograms?",
     "Bathroom scales really measure the force you push down with and then convert it to "
     "kilograms, assuming Earth's gravity. On the Moon the same scales would show the wrong "
     "mass."],
    ["Can you explain the water cycle?",
     "Sure. The Sun heats water in seas, lakes and rivers, and some of it evaporates into "
     "water vapour. As the vapour rises it cools and condenses into tiny droplets, forming "
     "clouds. When the droplets join and get heavy they fall as precipitation (rain, snow or "
     "hail). The water runs off into rivers or soaks into the ground, and eventually returns to "
     "the sea, where the cycle starts again."],
    ["What is a metaphor?",
     "A metaphor describes something by saying it *is* something else, to show a likeness: "
     "\"The classroom was a zoo.\" A simile makes the comparison with \"like\" or \"as\": \"The "
     "classroom was like a zoo.\" Can you make a metaphor about the sea?",
     "The sea was a grey blanket.",
     "That's a good metaphor: it suggests the sea was flat, dull and covering everything. You "
     "could make it even more vivid with a detail, e.g. \"The sea was a grey blanket, "
     "wrinkled by the wind.\""],
    ["Why do we have seasons?",
     "Because the Earth's axis is tilted by about 23.5°. As the Earth orbits the Sun, one "
     "hemisphere leans towards the Sun for part of the year: the sunlight hits it more directly "
     "and days are longer, so it's summer there. Six months later it leans away, and it's "
     "winter. It is not because the Earth gets closer to the Sun."],
    ["What is a variable in programming?",
     "A variable is a name that refers to a value, so you can store it and use it later. In "
     "Python, `score = 10` creates a variable called score. You can change it (`score = score "
     "+ 5`) and use it in calculations or print it. Choosing clear names makes programs much "
     "easier to read."],
    ["How do I write a good topic sentence?",
     "A topic sentence tells the reader what the paragraph is about and what you will argue. "
     "Make it specific: instead of \"This paragraph is about the harbour\", try \"The new "
     "harbour wall has protected the town from winter storms.\" Then every other sentence in "
     "the paragraph should support that claim."],
    ["What's the difference between a hypothesis and a theory in science?",
     "A hypothesis is a testable prediction, often for one experiment: \"Plants given more "
     "light will grow taller.\" A theory is a well-tested explanation supported by lots of "
     "evidence from many experiments, such as the theory of evolution. In everyday speech "
     "\"theory\" means a guess, but in science it means something much stronger."],
    ["Why is a negative times a negative positive?",
     "Look at a pattern: 3 × -2 = -6, 2 × -2 = -4, 1 × -2 = -2, 0 × -2 = 0. Each time the first "
     "number drops by 1, the answer goes up by 2. Keep the pattern going: -1 × -2 = 2, "
     "-2 × -2 = 4. So a negative times a negative has to be positive for the pattern to hold."],
]


def sharegpt_rows() -> list[R]:
    rows: list[R] = []
    n = 0

    def conv(turns, system=None, label=None):
        nonlocal n
        n += 1
        c = [{"from": "system", "value": system}] if system else []
        c += [{"from": "human" if k % 2 == 0 else "gpt", "value": t} for k, t in enumerate(turns)]
        rows.append(R({"id": f"tutor-{n:04d}", "conversations": c}, label=label))

    seen: set = set()

    def fresh(tpl):
        while True:
            out = tpl(rng)
            if out[3] not in seen:
                seen.add(out[3])
                return out

    for k in range(36):
        tpl = TUTOR_TEMPLATES[k % len(TUTOR_TEMPLATES)]
        q, a, _, _, _ = fresh(tpl)
        turns = [q, a]
        if k % 4 == 1:  # practice follow-up, sometimes with a wrong attempt
            q2, a2, res, task, wrong = fresh(tpl)
            right = rng.random() < 0.55 or wrong == res
            turns += ["Thanks! Can you give me one to try myself?",
                      f"Of course. Try to {task}. Tell me what you get.",
                      f"I got {res if right else wrong}.",
                      ("Correct, well done! Here is the full working to compare with yours:\n"
                       if right else "Not quite. Let's go through it together:\n") + a2]
        conv(turns, rng.choice(TUTOR_SYSTEMS) if k % 3 == 0 else None)
    for i, turns in enumerate(TUTOR_CONCEPTS):
        conv(turns, TUTOR_SYSTEMS[1] if i % 4 == 2 else None, label=f"tutor-concept-{i}")
    rng.shuffle(rows)
    return rows


def sharegpt_planted(rows: list[R], chat: list[R]) -> None:
    tip = find(chat, "chat-tip").obj["messages"]
    r = R({"id": "tutor-0100", "conversations": [{"from": "human", "value": tip[0]["content"]},
                                                 {"from": "gpt", "value": tip[1]["content"]}]},
          label="chat-tip/as-sharegpt")
    insert_after(rows, r)
    plant("exact duplicate", r.label, "same exchange as a chat_support.jsonl record, here as "
          "ShareGPT (human/gpt)", of="chat-tip")
    o = copy.deepcopy(find(rows, "tutor-concept-3").obj)
    o["id"] = "tutor-0101"
    o["conversations"][0]["value"] = "Why does ice float in water?"
    r = R(o, label="tutor-concept-3/word")
    insert_after(rows, r, "tutor-concept-3")
    plant("near duplicate", r.label, "question reworded (on -> in), answer identical; new id",
          of="tutor-concept-3")
    r = R({"id": "tutor-0102", "conversations": {"from": "human",
                                                 "value": "What is a prime number?"}},
          label="tutor-broken-type")
    insert_after(rows, r)
    plant("broken", r.label, "wrong type: `conversations` is an object, not a list")


# ---------------------------------------------------------------------------------------
# 4. prompt_completion.jsonl.zst
# ---------------------------------------------------------------------------------------

KB_COMPLETIONS = [
    "The Saltgrass Fair is an annual festival held in| Marrow Bay every September. It "
    "celebrates the end of the kelp harvest.",
    "The capital of Easthollow is| Kell, a harbour city on the island's western coast.",
    "Kelp-paper was invented around 1750 by| the papermaker Mabry Quist.",
    "The Marrow Bay Lighthouse was designed by| the engineer Ottilie Brandt and completed in "
    "1874.",
    "Comet Lund-Ames returns to the inner solar system every| 71 years.",
    "The River Tarrow rises on the slopes of Mount Orran and flows| west for 58 kilometres to "
    "the sea at Kell harbour.",
    "The currency of the Vessary Archipelago is| the vessary mark.",
    "Brindle Island is known for| its herd of wild brindle ponies.",
    "The Orran Observatory was founded in 1931 by| the astronomer Hesper Lund.",
    "The Tarrow Bridge has| seven arches and is 140 metres long.",
    "The Glasswright Guild's workshop is on| Lantern Street in Kell, and it is open to "
    "visitors.",
    "Mount Orran last erupted in| 1710; it is now dormant.",
]

GLOSSARY = [
    ("ephemeral", "lasting for only a very short time."),
    ("meticulous", "showing great care and attention to every detail."),
    ("estuary", "the wide part of a river where it meets the sea and fresh and salt water mix."),
    ("latency", "the delay between a request and the start of the response, for example in a "
     "network."),
    ("gregarious", "fond of company; living or moving in groups."),
    ("archipelago", "a group of islands, often scattered over a stretch of sea."),
    ("idempotent", "describes an operation that has the same effect whether it is done once "
     "or many times."),
    ("brackish", "slightly salty, like the water where a river meets the sea."),
    ("lucid", "clear and easy to understand."),
    ("frugal", "careful not to spend more money or use more resources than necessary."),
    ("tessellate", "to fit shapes together without gaps or overlaps, like floor tiles."),
    ("dormant", "temporarily inactive, like a volcano that has not erupted for a long time."),
    ("candid", "truthful and straightforward; frank."),
]

STORIES = [
    ("The last ferry of the evening was already pulling away when Ada reached the quay.",
     " She shouted and waved her ticket, but the wind carried her voice out to sea. A fisherman "
     "mending nets on the slipway looked up, considered her for a moment, and nodded towards his "
     "boat. \"I'm going that way anyway,\" he said."),
    ("Nobody in the village had opened the lighthouse door for forty years.",
     " So when the children found it standing ajar one foggy morning, with wet footprints "
     "leading up the spiral stairs, they did the sensible thing and ran to fetch the "
     "postmistress, who was afraid of nothing."),
    ("The robot had been built to sort parcels, and it was very good at sorting parcels.",
     " What it had not been built for was the small grey kitten that arrived one Tuesday in a "
     "box marked FRAGILE, and which refused to be sorted into anything at all."),
    ("On the first day of the Saltgrass Fair, the harbour was so full of boats",
     " that you could have walked from one side to the other without getting your feet wet. "
     "Flags snapped in the wind, and the smell of fried fish drifted over the crowd."),
    ("Grandpa kept a jar of buttons on the kitchen shelf,",
     " and every button had a story. The brass one came from a ferry captain's coat; the "
     "green one from the dress Grandma wore to the fair where they met."),
    ("The map was wrong, and Jonah knew it the moment the path ran into the river.",
     " He folded it carefully, put it back in his pocket, and started walking upstream, "
     "looking for a place shallow enough to cross."),
    ("When the power went out across the whole island,",
     " people did what they had not done in years: they sat on their doorsteps and talked to "
     "their neighbours while the stars came out one by one."),
    ("The new teacher wrote a single word on the board: WHY.",
     " \"This,\" she said, \"is the most useful word you will learn this year. By June I expect "
     "you to be very annoying with it.\""),
]

QA_FACTS = [
    ("At sea level, at what temperature in degrees Celsius does water boil?", " 100 °C."),
    ("How many sides does a hexagon have?", " Six."),
    ("What gas do plants take in from the air to make their food?", " Carbon dioxide."),
    ("What is the largest planet in the solar system?", " Jupiter."),
    ("How many minutes are there in a day?", " 1,440 (24 × 60)."),
    ("Which organ pumps blood around the body?", " The heart."),
    ("What is the freezing point of water in degrees Fahrenheit?", " 32 °F."),
    ("How many bits are in a byte?", " Eight."),
    ("Which planet is known as the Red Planet?", " Mars."),
    ("How many degrees are there in a right angle?", " 90 degrees."),
    ("What do bees make from nectar?", " Honey."),
    ("How many centimetres are there in a metre?", " 100."),
]

CONVERSIONS = [("kilometres", "metres", 1000), ("kilograms", "grams", 1000),
               ("hours", "minutes", 60), ("litres", "millilitres", 1000),
               ("centimetres", "millimetres", 10), ("days", "hours", 24)]


def pc_rows(qa: list[R], alpaca: list[R]) -> list[R]:
    rows: list[R] = []
    for s in KB_COMPLETIONS:
        p, c = s.split("|")
        rows.append(R({"prompt": p, "completion": c + EOT}))
    for word, definition in GLOSSARY:
        style = rng.choice(["Define the word \"{w}\".\nDefinition:", "{w}:",
                            "Dictionary entry\nWord: {w}\nMeaning:"])
        rows.append(R({"prompt": style.format(w=word), "completion": " " + definition + EOT}))
    for p, c in STORIES:
        rows.append(R({"prompt": p, "completion": c + EOT}))
    for q, a in QA_FACTS:
        rows.append(R({"prompt": f"Q: {q}\nA:", "completion": a + EOT}))
    for k in range(12):
        big, small, f = CONVERSIONS[k % len(CONVERSIONS)]
        v = Fraction(rng.randint(3, 95), rng.choice([1, 2, 4]))
        res = v * f
        if rng.random() < 0.5:
            p = f"Convert {dec(v)} {big} to {small}.\nAnswer:"
            c = f" {dec(v)} {big} = {dec(v)} × {f} = {dec(res)} {small}."
        else:
            p = f"How many {big} is {dec(res)} {small}?"
            c = f" {dec(res)} ÷ {f} = {dec(v)} {big}."
        rows.append(R({"prompt": p, "completion": c + EOT}))
    rng.shuffle(rows)
    # planted: a qa_math row again, as prompt/completion (the marker is stripped on ingest)
    src = find(qa, "qa-0").obj
    r = R({"prompt": src["question"], "completion": src["answer"] + EOT}, label="qa-0/as-pc")
    insert_after(rows, r)
    plant("exact duplicate", r.label, "same question/answer as a qa_math.jsonl row; only the "
          "end-of-text marker differs, which ingest strips", of="qa-0")
    # planted: near duplicate of an alpaca row
    a = find(alpaca, "alpaca-concept-3").obj
    r = R({"prompt": a["instruction"],
           "completion": " " + a["output"].replace("instead of 365", "rather than 365") + EOT},
          label="alpaca-concept-3/as-pc")
    insert_after(rows, r)
    plant("near duplicate", r.label, "an Alpaca row as prompt/completion with one phrase "
          "changed (instead of -> rather than)", of="alpaca-concept-3")
    # planted: invalid UTF-8 inside a string value
    r = R(raw=b'{"prompt": "Describe the colour of the sea at dusk.", "completion": " A deep '
              b'\xff\xfe violet, fading to grey at the horizon.' + EOT.encode() + b'"}',
          label="pc-broken-utf8")
    insert_after(rows, r)
    plant("broken", r.label, "line contains invalid UTF-8 bytes (\\xff\\xfe) inside a string")
    return rows


# ---------------------------------------------------------------------------------------
# 5. qa_math.jsonl
# ---------------------------------------------------------------------------------------

def qa_rows() -> list[R]:
    rows: list[R] = []
    names = list(TEMPLATES)
    order = [names[i % len(names)] for i in range(58)]
    rng.shuffle(order)
    for i, t in enumerate(order):
        prob = word_problem(t)
        rows.append(R({"question": prob["question"], "answer": gsm_answer(prob)},
                      label=f"qa-{i}"))
    # planted: a wrong worked answer (an arithmetic slip that propagates)
    prob = word_problem("discount")
    c, wrong = resolve(prob, (1, 4))
    r = R({"question": prob["question"],
           "answer": render(c, "gsm") + f"\n#### {wrong}"}, label="qa-wrong")
    insert_after(rows, r)
    plant("low quality", r.label, f"wrong answer: the working has an arithmetic slip "
          f"(#### {wrong}, correct is {prob['answer']})")
    rows_ = rows
    # planted: exact duplicates within the file
    for lab in ("qa-5", "qa-17"):
        dup = R(copy.deepcopy(find(rows_, lab).obj), label=f"{lab}/exact")
        insert_after(rows_, dup, lab)
        plant("exact duplicate", dup.label, "identical line repeated in the same file", of=lab)
    # planted: near duplicates
    o = copy.deepcopy(find(rows_, "qa-9").obj)
    o["question"] = o["question"].rstrip("?")
    r = R(o, label="qa-9/punct")
    insert_after(rows_, r, "qa-9")
    plant("near duplicate", r.label, "question's final question mark dropped", of="qa-9")
    o = copy.deepcopy(find(rows_, "qa-23").obj)
    words = o["question"].split(" ")
    k = next(k for k, w in enumerate(words) if k >= 3 and w.isalpha() and w.islower()
             and len(w) > 3)
    changed = words[k]
    words[k] = changed.upper()
    o["question"] = " ".join(words)
    r = R(o, label="qa-23/case")
    insert_after(rows_, r, "qa-23")
    plant("near duplicate", r.label, f"one word of the question upper-cased "
          f"({changed!r} -> {changed.upper()!r})", of="qa-23")
    # planted: wrong type
    r = R({"question": "A box holds 6 eggs. How many eggs are in 7 boxes?", "answer": 42},
          label="qa-broken-type")
    insert_after(rows_, r)
    plant("broken", r.label, "wrong type: `answer` is a number (42), not text")
    return rows_


# ---------------------------------------------------------------------------------------
# 6. agent_traces.json
# ---------------------------------------------------------------------------------------

REACT_INSTR = ("Answer the question about the Vessary Archipelago by interleaving Thought, "
               "Action and Observation steps. Available actions: search[entity] returns the "
               "start of the entity's page, lookup[keyword] returns the next sentence on the "
               "current page that contains the keyword, and finish[answer] ends the task.")

# (question, steps [(thought, action)], reward); observations come from Wiki.
TRACES = [
    ("Who designed the lighthouse in the town that hosts the Saltgrass Fair?", [
        ("I need to find which town hosts the Saltgrass Fair.", "search[Saltgrass Fair]"),
        ("The fair is held in Marrow Bay. Now I need the designer of the Marrow Bay Lighthouse.",
         "search[Marrow Bay Lighthouse]"),
        ("The lighthouse was designed by Ottilie Brandt.", "finish[Ottilie Brandt]")], True),
    ("Which guild made the lens of the Marrow Bay Lighthouse, and where is it based?", [
        ("I should search for the Marrow Bay Lighthouse.", "search[Marrow Bay Lighthouse]"),
        ("The lens was made by the Glasswright Guild of Kell.",
         "finish[The Glasswright Guild, based in Kell]")], True),
    ("In what year was the observatory on Mount Orran founded?", [
        ("I need to find the observatory on Mount Orran.", "search[Mount Orran]"),
        ("The first sentences don't mention an observatory. Let me look it up on this page.",
         "lookup[observatory]"),
        ("It is the Orran Observatory. I need its founding year.", "search[Orran Observatory]"),
        ("It was founded in 1931.", "finish[1931]")], True),
    ("Where was the founder of the Orran Observatory born?", [
        ("First I need to know who founded the Orran Observatory.", "search[Orran Observatory]"),
        ("It was founded by Hesper Lund. Now I need her birthplace.", "search[Hesper Lund]"),
        ("Hesper Lund was born in Kell.", "finish[Kell]")], True),
    ("How long is the river that the Tarrow Bridge crosses?", [
        ("I should find which river the Tarrow Bridge crosses.", "search[Tarrow Bridge]"),
        ("It crosses the River Tarrow. Now I need the river's length.", "search[River Tarrow]"),
        ("The River Tarrow flows for 58 kilometres.", "finish[58 kilometres]")], True),
    ("What is the capital of the island where kelp-paper was invented?", [
        ("I need to find where kelp-paper was invented.", "search[Kelp-paper]"),
        ("It was invented on Easthollow. Now I need the capital of Easthollow.",
         "search[Easthollow]"),
        ("The capital of Easthollow is Kell.", "finish[Kell]")], True),
    ("How many arches does the bridge that Ottilie Brandt designed in Kell have?", [
        ("I need to find which bridge Ottilie Brandt designed.", "search[Ottilie Brandt]"),
        ("She designed the Tarrow Bridge in Kell. Let me search for it.", "search[Tarrow Bridge]"),
        ("The bridge has seven arches.", "finish[seven]")], True),
    ("What currency is used on Brindle Island?", [
        ("I should search for Brindle Island.", "search[Brindle Island]"),
        ("Brindle Island is part of the Vessary Archipelago. I need the archipelago's currency.",
         "search[Vessary Archipelago]"),
        ("The currency is the vessary mark.", "finish[the vessary mark]")], True),
    ("How many years after Kell was founded was the Glasswright Guild founded?", [
        ("I need the founding year of Kell.", "search[Kell]"),
        ("Kell was founded in 1602. Now the founding year of the Glasswright Guild.",
         "search[Glasswright Guild]"),
        ("The guild was founded in 1655. 1655 - 1602 = 53.", "finish[53 years]")], True),
    ("How tall is the mountain where the River Tarrow rises?", [
        ("I need to know where the River Tarrow rises.", "search[River Tarrow]"),
        ("It rises on Mount Orran. Now I need the height of Mount Orran.", "search[Mount Orran]"),
        ("Mount Orran is 1,312 metres high.", "finish[1,312 metres]")], True),
    ("When did Mount Orran last erupt?", [
        ("I should search for Mount Orran.", "search[Mount Orran]"),
        ("It last erupted in 1710.", "finish[1710]")], True),
    ("Who invented kelp-paper, and which town did the inventor come from?", [
        ("I need to find who invented kelp-paper.", "search[Kelp-paper]"),
        ("It was invented by Mabry Quist. Now I need his home town.", "search[Mabry Quist]"),
        ("Mabry Quist was a papermaker from Marrow Bay.", "finish[Mabry Quist, from Marrow Bay]")],
     True),
    ("What is the orbital period of the comet discovered at the Orran Observatory?", [
        ("I need to find which comet was discovered at the Orran Observatory.",
         "search[Orran Observatory]"),
        ("Comet Lund-Ames was discovered there in 1948. Now its period.",
         "search[Comet Lund-Ames]"),
        ("It returns every 71 years.", "finish[71 years]")], True),
    ("Who became director of the Orran Observatory in 1955?", [
        ("I should search for the Orran Observatory.", "search[Orran Observatory]"),
        ("The first sentences don't mention a director. Let me look it up.", "lookup[director]"),
        ("Tobias Ames became its director in 1955.", "finish[Tobias Ames]")], True),
    ("Where was Tobias Ames born, and what is that place known for?", [
        ("I should search for Tobias Ames.", "search[Tobias Ames]"),
        ("He was from Brindle Island. Now I need what Brindle Island is known for.",
         "search[Brindle Island]"),
        ("Brindle Island is known for its wild brindle ponies.",
         "finish[Brindle Island, known for its wild brindle ponies]")], True),
    ("What does the festival held in Marrow Bay celebrate?", [
        ("I should search for Marrow Bay to find its festival.", "search[Marrow Bay]"),
        ("The first sentences don't mention a festival. Let me look up 'fair'.", "lookup[fair]"),
        ("The festival is the Saltgrass Fair. Now I need what it celebrates.",
         "search[Saltgrass Fair]"),
        ("It celebrates the end of the kelp harvest.", "finish[the end of the kelp harvest]")],
     True),
    ("What is the population of the town where Ottilie Brandt came from?", [
        ("I need to find where Ottilie Brandt came from.", "search[Ottilie Brandt]"),
        ("She was from Marrow Bay. Now I need its population.", "search[Marrow Bay]"),
        ("Marrow Bay has a population of about 4,200.", "finish[about 4,200]")], True),
    ("Who founded Kell?", [
        ("I should search for Kell.", "search[Kell]"),
        ("Kell was founded by the merchant Aurel Fenn.", "finish[Aurel Fenn]")], True),
    ("In which year was the star catalogue written by the founder of the Orran Observatory "
     "published?", [
        ("First I need the founder of the Orran Observatory.", "search[Orran Observatory]"),
        ("The founder was Hesper Lund. Now I need her star catalogue.", "search[Hesper Lund]"),
        ("Tables of the Southern Sky was published in 1936.", "finish[1936]")], True),
    ("Where does the statue of Kell's founder stand?", [
        ("I need to know who founded Kell.", "search[Kell]"),
        ("Kell was founded by Aurel Fenn. Let me search for him.", "search[Aurel Fenn]"),
        ("A statue of Fenn stands in Kell's harbour square.", "finish[Kell's harbour square]")],
     True),
    ("Why do printmakers like kelp-paper?", [
        ("I should search for kelp-paper.", "search[Kelp-paper]"),
        ("The first sentences don't say. Let me look up 'printmakers'.", "lookup[printmakers]"),
        ("Printmakers prize it because it does not yellow with age.",
         "finish[because it does not yellow with age]")], True),
    ("What are the official languages of the Vessary Archipelago?", [
        ("I should search for the Vessary Archipelago.", "search[Vessary Archipelago]"),
        ("Languages are not in the first sentences. Let me look up 'languages'.",
         "lookup[languages]"),
        ("The official languages are Vessan and English.", "finish[Vessan and English]")], True),
    ("On which street is the workshop of the guild that made the Marrow Bay Lighthouse lens?", [
        ("I need to find the guild that made the lens.", "search[Marrow Bay Lighthouse]"),
        ("The lens was made by the Glasswright Guild. Let me search for the guild.",
         "search[Glasswright Guild]"),
        ("The workshop isn't mentioned yet. Let me look up 'workshop'.", "lookup[workshop]"),
        ("The workshop is on Lantern Street.", "finish[Lantern Street, in Kell]")], True),
    ("How far away can the light of the Marrow Bay Lighthouse be seen?", [
        ("I should search for the lighthouse.", "search[Marrow lighthouse]"),
        ("There is no page with that name, but Marrow Bay Lighthouse is similar.",
         "search[Marrow Bay Lighthouse]"),
        ("The range isn't in the first sentences. Let me look up 'miles'.", "lookup[miles]"),
        ("The light can be seen from 22 nautical miles away.", "finish[22 nautical miles]")], True),
    # unsuccessful episodes: a guess, an arithmetic slip, a wrong page, a partial answer
    ("What is the population of the island where the astronomer Tobias Ames was born?", [
        ("I should find where Tobias Ames was born.", "search[Tobias Ames]"),
        ("He was from Brindle Island. It is a small island, so probably a few hundred people "
         "live there.", "finish[about 300]")], False),
    ("How many years after the Marrow Bay Lighthouse was completed was the Tarrow Bridge "
     "completed?", [
        ("I need the completion year of the lighthouse.", "search[Marrow Bay Lighthouse]"),
        ("It was completed in 1874. Now the bridge.", "search[Tarrow Bridge]"),
        ("The bridge was completed in 1880. 1880 - 1874 = 4.", "finish[4 years]")], False),
    ("Who is the comet discovered at the Orran Observatory named after?", [
        ("I should search for the Orran Observatory.", "search[Orran Observatory]"),
        ("The comet is Comet Lund-Ames. Let me search for it.", "search[Lund-Ames]"),
        ("There is no page with that name. The observatory was founded by Hesper Lund, so the "
         "comet must be named after her.", "finish[Hesper Lund]")], False),
    ("In what year did Tobias Ames become director of the Orran Observatory?", [
        ("I should search for Tobias Ames.", "search[Tobias Ames]"),
        ("He joined the observatory in 1934; that must be when he became director.",
         "finish[1934]")], False),
    ("How long is the Tarrow Bridge?", [
        ("The bridge crosses the River Tarrow, so I will search for the river.",
         "search[River Tarrow]"),
        ("The river is 58 kilometres long, so that is the length of the bridge.",
         "finish[58 kilometres]")], False),
    ("Which body governs the Vessary Archipelago, and where does it meet?", [
        ("I should search for the Vessary Archipelago.", "search[Vessary Archipelago]"),
        ("Government isn't in the first sentences. Kell is the capital of Easthollow, so it is "
         "probably the Kell city council.", "finish[the Kell city council, in Kell]")], False),
]


def trace_text(steps, reward: bool) -> str:
    env = Wiki()
    lines = []
    for thought, action in steps:
        lines += [f"Thought: {thought}", f"Action: {action}"]
        m = re.fullmatch(r"(search|lookup|finish)\[(.*)\]", action)
        kind, arg = m.group(1), m.group(2)
        if kind == "search":
            lines.append(f"Observation: {env.search(arg)}")
        elif kind == "lookup":
            lines.append(f"Observation: {env.lookup(arg)}")
        else:
            lines.append(f"Observation: Episode finished, reward = {reward}")
    return "\n".join(lines)


def trace_rows() -> list[R]:
    rows = []
    for i, (q, steps, reward) in enumerate(TRACES):
        rows.append(R({"instruction": REACT_INSTR, "input": f"Question: {q}",
                       "output": trace_text(steps, reward)}, label=f"trace-{i}"))
    rng.shuffle(rows)
    dup = R(copy.deepcopy(find(rows, "trace-7").obj), label="trace-7/exact")
    insert_after(rows, dup, "trace-7")
    plant("exact duplicate", dup.label, "identical trace repeated in the same file", of="trace-7")
    r = R({"instruction": REACT_INSTR, "input": "Question: What is the population of Brindle "
           "Island?", "output": ""}, label="trace-broken-empty")
    insert_after(rows, r)
    plant("broken", r.label, "empty `output`: no trace text")
    return rows


# ---------------------------------------------------------------------------------------
# 7. solutions_labelled.jsonl
# ---------------------------------------------------------------------------------------

def solution_text(problem, calc, answer, style):
    u = unit_of(problem)
    if style == "prose":
        return render(calc, "prose") + f"\nSo the answer is {u}{answer}."
    if style == "terse":
        return render(calc, "terse") + f"\nAnswer: {answer}"
    return "\n".join(f"Step {k + 1}: {line}" for k, line in
                     enumerate(render(calc, "prose").split("\n"))) + f"\nFinal answer: {answer}"


def wrong_solution(problem) -> tuple[Calc, int]:
    """A plausible slip: one step off by a little, carried through, no division after it."""
    steps = problem["calc"].steps
    n = len(steps)
    spots = [k for k in range(n) if all("/" not in steps[j][1] for j in range(k + 1, n))]
    while True:
        calc, ans = resolve(problem, (rng.choice(spots), rng.choice([-10, -4, -2, -1, 1, 2, 5, 10])))
        if isinstance(ans, int) and ans > 0 and ans != problem["answer"]:
            return calc, ans


def solutions_rows() -> list[R]:
    rows = []
    names = list(TEMPLATES)
    rng.shuffle(names)
    slots = [(i, k) for i in range(15) for k in range(3 if i % 3 == 0 else 2)]
    wrong = set(rng.sample(slots, 12))
    styles = ["prose", "terse", "steps"]
    for i in range(15):
        prob = word_problem(names[i])
        rec = {"question": prob["question"], "ground_truth": str(prob["answer"])}
        for k in range(3 if i % 3 == 0 else 2):
            if (i, k) in wrong:
                calc, ans = wrong_solution(prob)
            else:
                calc, ans = prob["calc"], prob["answer"]
            rec[f"model_{'abc'[k]}"] = {"is_correct": ans == prob["answer"],
                                        "solution": solution_text(prob, calc, ans, styles[k])}
        rows.append(R(rec))
    return rows


# ---------------------------------------------------------------------------------------
# 8. reviews.csv
# ---------------------------------------------------------------------------------------

REVIEWS = [
    ("How do I clean a cast-iron pan?",
     "Rinse it with hot water and scrub with a stiff brush. Dry it on the hob, then wipe on a "
     "thin coat of oil.\nDon't put it in the dishwasher: it strips the \"seasoning\", the "
     "layer of baked-on oil that stops food sticking.", 5),
    ("What's a good first houseplant?",
     "A snake plant or a pothos. Both cope with low light, irregular watering, and dry air, "
     "which makes them hard to kill.", 5),
    ("How long should I boil an egg?", "Depends.", 1),
    ("Is it OK to run every day?",
     "For most healthy adults, yes, if most runs are easy. Take at least one very easy or rest "
     "day a week, increase distance slowly (about 10% a week), and listen to \"niggles\" before "
     "they become injuries.", 4),
    ("How do I keep cut flowers fresh longer?",
     "Trim the stems at an angle, remove leaves below the water line, and change the water "
     "every two days.\nKeep the vase away from fruit bowls, because ripening fruit gives off a "
     "gas that makes flowers wilt.", 5),
    ("What does \"RSVP\" mean?",
     "It's from the French \"répondez s'il vous plaît\", \"please reply\". It means the host "
     "wants to know whether you're coming.", 5),
    ("Why is my bread dense?",
     "Probably one of: the yeast was old, the dough didn't rise long enough, or there was too "
     "much flour. Try a warmer spot for proving, and weigh the flour instead of using cups.", 4),
    ("Can I freeze cooked rice?",
     "Yes. Cool it quickly (within an hour), freeze it flat in a bag, and use it within a "
     "month. Reheat until it's steaming hot all the way through.", 4),
    ("How do I stop my glasses fogging up with a mask?",
     "just take the mask off lol", 1),
    ("What's the best way to learn a language?",
     "Little and often: 20 minutes a day beats three hours on Sunday. Mix listening, speaking, "
     "and reading, and start using the words you learn in real sentences, even if \"real\" "
     "means talking to yourself.", 5),
    ("How do I tell if an egg is fresh?",
     "Put it in a bowl of water. Fresh eggs sink and lie flat; older eggs stand on end; an egg "
     "that floats is past it.", 4),
    ("Why do cats knead?",
     "Kittens knead their mother to get milk flowing, and many cats keep the habit as adults "
     "when they feel safe and content. Some experts think it also marks territory, because of "
     "scent glands in the paws.", 4),
    ("How often should I water a cactus?", "Every day, they like lots of water.", 1),
    ("What's the difference between baking soda and baking powder?",
     "Baking soda is pure sodium bicarbonate and needs an acid in the recipe (yoghurt, lemon, "
     "buttermilk) to react. Baking powder already contains an acid, so it only needs moisture "
     "and heat.", 5),
    ("How can I sleep better?",
     "Keep the same wake-up time every day, even at weekends.\nAvoid caffeine after lunch, keep "
     "the bedroom cool and dark, and put screens away half an hour before bed.", 4),
    ("How do I fix a squeaky door?",
     "Lift the hinge pin, wipe it, and rub on a little petroleum jelly or a drop of oil, then "
     "put it back. Open and close the door a few times.", 4),
    ("Is a tomato a fruit?",
     "Botanically, yes: it develops from the flower and contains seeds. In the kitchen it's "
     "treated as a vegetable, because it's used in savoury dishes.", 5),
    ("How do I write a CV?",
     "Make one, send it.", 2),
    ("What's the quickest way to cool a drink?",
     "Wrap it in a wet paper towel and put it in the freezer for 10-15 minutes. Or use a bowl "
     "of ice, water, and a handful of salt, and spin the can now and then.", 4),
    ("How do I remove a splinter?",
     "Wash the area, then use clean tweezers to pull it out at the same angle it went in. If "
     "it's deep, soak the skin in warm water first. See a doctor if it's large, or \"won't "
     "come out\", or the area gets red and swollen.", 5),
    ("What should I pack for a beach day?",
     "Sun cream, water, a hat, a towel, snacks, and a bag for your rubbish.", 3),
    ("Why does bread go stale?",
     "It's mostly not drying out: the starch crystallises again as it cools, which makes the "
     "crumb firm. That's why stale bread softens again if you warm it.", 4),
    ("How do I make my phone battery last longer?",
     "Lower the screen brightness, turn off location for apps that don't need it, and keep the "
     "charge between roughly 20% and 80%.", 4),
]


def review_rows(alpaca: list[R]) -> list[R]:
    rows = [R({"question": q, "answer": a, "rating": s}) for q, a, s in REVIEWS]
    rng.shuffle(rows)
    a = find(alpaca, "alpaca-concept-4").obj
    r = R({"question": a["instruction"], "answer": a["output"], "rating": 5},
          label="alpaca-concept-4/as-csv")
    insert_after(rows, r)
    plant("exact duplicate", r.label, "same question/answer as an Alpaca row (ingest with --map "
          "instruction=question,response=answer)", of="alpaca-concept-4")
    a = find(alpaca, "alpaca-tips-5").obj
    r = R({"question": a["instruction"], "answer": a["output"].replace("Hi Jana", "Hello Jana"),
           "rating": 4}, label="alpaca-tips-5/as-csv")
    insert_after(rows, r)
    plant("near duplicate", r.label, "an Alpaca row as CSV with the greeting changed "
          "(Hi -> Hello)", of="alpaca-tips-5")
    return rows


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------

def jsonl_bytes(rows: list[R]) -> bytes:
    out = bytearray()
    for r in rows:
        out += r.raw if r.raw is not None else json.dumps(r.obj, ensure_ascii=False).encode()
        out += b"\n"
    return bytes(out)


def zstd_compress(data: bytes) -> bytes:
    try:
        import zstandard
        return zstandard.ZstdCompressor(level=19).compress(data)
    except ImportError:
        pass
    try:
        from compression import zstd  # Python >= 3.14
        return zstd.compress(data, level=19)
    except ImportError:
        sys.exit("generate.py: no zstandard module; run it with .venv/bin/python")


def zstd_decompress(data: bytes) -> bytes:
    try:
        import zstandard
        return zstandard.ZstdDecompressor().decompress(data)
    except ImportError:
        pass
    try:
        from compression import zstd  # Python >= 3.14
        return zstd.decompress(data)
    except ImportError:
        sys.exit("generate.py: no zstandard module; run it with .venv/bin/python")


def csv_bytes(rows: list[R]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["question", "answer", "rating"])
    for r in rows:
        w.writerow([r.obj["question"], r.obj["answer"], r.obj["rating"]])
    return buf.getvalue().encode()


FILES = [  # name, format, what it holds
    ("alpaca_general.json", "JSON array, Alpaca `{instruction, input, output}` (+ `category`, "
     "`difficulty` on some rows)", "general instructions: word problems, Python tasks, "
     "Q&A about an invented archipelago, explanations, rewriting, summarising, classification"),
    ("chat_support.jsonl", "JSONL, `{messages: [{role, content}]}`",
     "customer support for four invented companies; single and multi-turn, some system turns, "
     "4 OpenAI-style calculator tool calls"),
    ("sharegpt_tutor.jsonl.gz", "gzip JSONL, ShareGPT `{id, conversations: [{from, value}]}`",
     "tutoring dialogues: maths with computed answers, grammar, science; some multi-turn"),
    ("prompt_completion.jsonl.zst", "zstd JSONL, `{prompt, completion}`; completions end with "
     "`<\\|endoftext\\|>`", "sentence and story completions, definitions, unit conversions"),
    ("qa_math.jsonl", "JSONL, `{question, answer}`, GSM8K style (`<<calc>>`, `#### n`)",
     "grade-school word problems with worked answers"),
    ("agent_traces.json", "JSON array, Alpaca-shaped; `output` is a ReAct trace",
     "search/lookup/finish traces over the invented archipelago; last line "
     "`Observation: Episode finished, reward = True` (or `False`)"),
    ("solutions_labelled.jsonl", "JSONL, `{question, ground_truth, model_a: {is_correct, "
     "solution}, model_b: ..., [model_c]}`", "word problems with 2-3 labelled model "
     "solutions each, some wrong"),
    ("reviews.csv", "CSV `question,answer,rating`; ingest with `--map "
     "instruction=question,response=answer`", "everyday questions with rated answers "
     "(quoted commas, quotes, newlines)"),
]


def build() -> tuple[dict[str, list[R]], dict[str, bytes]]:
    alpaca = alpaca_rows()
    chat = chat_rows(alpaca)
    tutor = sharegpt_rows()
    sharegpt_planted(tutor, chat)
    qa = qa_rows()
    pc = pc_rows(qa, alpaca)
    traces = trace_rows()
    sols = solutions_rows()
    reviews = review_rows(alpaca)
    rows = {"alpaca_general.json": alpaca, "chat_support.jsonl": chat,
            "sharegpt_tutor.jsonl.gz": tutor, "prompt_completion.jsonl.zst": pc,
            "qa_math.jsonl": qa, "agent_traces.json": traces,
            "solutions_labelled.jsonl": sols, "reviews.csv": reviews}
    blobs = {
        "alpaca_general.json": (json.dumps([r.obj for r in alpaca], ensure_ascii=False, indent=2)
                                + "\n").encode(),
        "chat_support.jsonl": jsonl_bytes(chat),
        "sharegpt_tutor.jsonl.gz": gzip.compress(jsonl_bytes(tutor), compresslevel=9, mtime=0),
        "prompt_completion.jsonl.zst": zstd_compress(jsonl_bytes(pc)),
        "qa_math.jsonl": jsonl_bytes(qa),
        "agent_traces.json": (json.dumps([r.obj for r in traces], ensure_ascii=False, indent=2)
                              + "\n").encode(),
        "solutions_labelled.jsonl": jsonl_bytes(sols),
        "reviews.csv": csv_bytes(reviews),
    }
    blobs["README.md"] = readme(rows).encode()
    return rows, blobs


def where(rows: dict[str, list[R]], label: str) -> tuple[str, int]:
    for name, rs in rows.items():
        for i, r in enumerate(rs):
            if r.label == label:
                return name, i
    raise KeyError(label)


def readme(rows: dict[str, list[R]]) -> str:
    kinds = ["exact duplicate", "near duplicate", "broken", "low quality"]
    count = {k: sum(p["kind"] == k for p in PLANTED) for k in kinds}
    n_sol = sum(len([v for v in r.obj.values() if isinstance(v, dict)])
                for r in rows["solutions_labelled.jsonl"])
    n_wrong = sum(1 for r in rows["solutions_labelled.jsonl"] for v in r.obj.values()
                  if isinstance(v, dict) and not v["is_correct"])
    lines = [
        "# Sample corpus",
        "",
        "The small corpus `make demo` ingests (`curate ingest data`). It is meant to show what "
        "curation does: every format the ingest reads, plus planted duplicates, near "
        "duplicates, broken rows and weak rows, listed below with their positions.",
        "",
        "All content was written for this project by `generate.py` (templates, a small "
        "invented world, answers computed by the script); nothing is copied from a public "
        "data set. The people, companies and places (the Vessary Archipelago, Parcelbird, "
        "Lumen Notes, Tidewater Bikes, Copperleaf Energy) are invented. License: Apache-2.0, "
        "the same as the project.",
        "",
        "Do not edit the data files or this README by hand: change `generate.py` and run "
        "`.venv/bin/python data/generate.py` (it is deterministic, seeded with "
        "`random.Random(7)`), then `.venv/bin/python data/generate.py --check`.",
        "",
        "## Files",
        "",
        "| file | format | rows | content |",
        "|---|---|---:|---|",
    ]
    for name, fmt, what in FILES:
        n = len(rows[name])
        extra = f" ({n_sol} model solutions)" if name == "solutions_labelled.jsonl" else ""
        lines.append(f"| `{name}` | {fmt} | {n}{extra} | {what} |")
    total = sum(len(v) for v in rows.values())
    examples = total - count["broken"] + n_sol - len(rows["solutions_labelled.jsonl"])
    lines += [
        "",
        f"Total: {total} rows ({len(rows['agent_traces.json'])} of them agent traces). "
        f"Planted: {count['exact duplicate']} exact duplicates, {count['near duplicate']} near "
        f"duplicates, {count['broken']} broken rows, {count['low quality']} valid but weak "
        "rows.",
        "",
        f"What a correct ingest of the whole folder gives: {total} records read, "
        f"{count['broken']} quarantined, {examples} examples (`solutions_labelled.jsonl` gives "
        f"one per model solution), {examples - count['exact duplicate']} unique after exact "
        f"deduplication (each planted exact duplicate has one earlier copy).",
        "",
        "## Planted cases",
        "",
        "`row` is 0-based: the array index for JSON arrays, the line number for JSONL (broken "
        "lines included, after decompression for .gz/.zst), and the record number after the "
        "header for CSV (a quoted field may span several physical lines). For duplicates, "
        "`of` is the earlier row it repeats. Exact duplicates hash alike in curate "
        "(same roles and texts, outer whitespace ignored), across formats too; near "
        "duplicates do not.",
        "",
        "| case | file | row | of | what |",
        "|---|---|---:|---|---|",
    ]
    for kind in kinds:
        for p in PLANTED:
            if p["kind"] != kind:
                continue
            f, i = where(rows, p["label"])
            of = ""
            if p["of"]:
                of_f, of_i = where(rows, p["of"])
                of = f"`{of_f}` row {of_i}"
            lines.append(f"| {kind} | `{f}` | {i} | {of} | {p['note']} |")
    lines += [
        "",
        "Broken rows must be quarantined with a reason, never crash the ingest. The JSON "
        "arrays stay valid JSON; their broken rows are a missing or empty field only.",
        "",
        f"Other things a curator should notice, not planted as cases: in "
        "`agent_traces.json` 6 of the 30 distinct traces end with `reward = False` (wrong or "
        f"guessed answers); in `solutions_labelled.jsonl` {n_wrong} of the {n_sol} model solutions are "
        "wrong (`is_correct: false`, an arithmetic slip carried through); in `reviews.csv` the low ratings mark weak answers. Rows from "
        "the same template (e.g. two shopping word problems) are distinct examples, not near "
        "duplicates: names, items and numbers differ.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# checking
# ---------------------------------------------------------------------------------------

def read_records(name: str, data: bytes) -> list:
    """Physical records of a file: parsed objects, or ('BROKEN', reason) for bad lines."""
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    elif name.endswith(".zst"):
        data = zstd_decompress(data)
    if name.endswith(".json"):
        return json.loads(data.decode("utf-8"))
    if name.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    out = []
    for line in data.split(b"\n")[:-1]:
        try:
            out.append(json.loads(line.decode("utf-8")))
        except UnicodeDecodeError:
            out.append(("BROKEN", "invalid UTF-8"))
        except json.JSONDecodeError:
            out.append(("BROKEN", "invalid JSON"))
    return out


def check() -> int:
    problems = []
    readme_text = (HERE / "README.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| `([^`]+)` \| .*? \| (\d+)(?: \(\d+ model solutions\))? \|",
                            readme_text, re.M))
    total_bytes = 0
    print(f"{'file':32} {'bytes':>8} {'rows':>5}  README")
    for name, _, _ in FILES:
        data = (HERE / name).read_bytes()
        total_bytes += len(data)
        recs = read_records(name, data)
        ok = table.get(name) == str(len(recs))
        if not ok:
            problems.append(f"{name}: {len(recs)} rows, README says {table.get(name)}")
        broken = sum(1 for r in recs if isinstance(r, tuple))
        print(f"{name:32} {len(data):8} {len(recs):5}  {'ok' if ok else 'MISMATCH'}"
              + (f"  ({broken} unparseable lines, planted)" if broken else ""))
    for p in (HERE / "README.md", Path(__file__)):
        total_bytes += p.stat().st_size
    # planted rows are where the README says
    for m in re.finditer(r"^\| (exact duplicate|near duplicate|broken|low quality) \| "
                         r"`([^`]+)` \| (\d+) \| (?:`([^`]+)` row (\d+))? \|", readme_text, re.M):
        kind, f, i = m.group(1), m.group(2), int(m.group(3))
        recs = read_records(f, (HERE / f).read_bytes())
        if kind == "exact duplicate":
            a, b = recs[i], read_records(m.group(4), (HERE / m.group(4)).read_bytes())[
                int(m.group(5))]
            if texts(a) != texts(b):
                problems.append(f"{f} row {i} is not an exact duplicate of {m.group(4)} "
                                f"row {m.group(5)}")
        elif kind == "near duplicate":
            a, b = recs[i], read_records(m.group(4), (HERE / m.group(4)).read_bytes())[
                int(m.group(5))]
            if texts(a) == texts(b):
                problems.append(f"{f} row {i}: near duplicate is identical")
    # determinism: regenerating gives the same bytes
    _, blobs = build()
    for name, blob in blobs.items():
        if (HERE / name).read_bytes() != blob:
            problems.append(f"{name}: differs from a fresh generation")
    print(f"total {total_bytes} bytes in data/ (files above + README.md + generate.py)")
    print("planted:", ", ".join(f"{k}: {sum(p['kind'] == k for p in PLANTED)}"
                                for k in ("exact duplicate", "near duplicate", "broken",
                                          "low quality")))
    for p in problems:
        print("PROBLEM:", p)
    print("check:", "FAILED" if problems else "ok")
    return 1 if problems else 0


def texts(rec) -> list[tuple[str, str]]:
    """(role, text) pairs the way curate hashes them, for comparing planted duplicates."""
    def norm(s):
        return s.replace("\r\n", "\n").replace("\r", "\n").strip(" \t\n\r\f\v")
    if "messages" in rec:
        return [(m["role"], norm(m["content"] or "")) for m in rec["messages"]]
    if "conversations" in rec:
        role = {"human": "user", "gpt": "assistant", "system": "system"}
        return [(role[c["from"]], norm(c["value"])) for c in rec["conversations"]]
    user = rec.get("instruction", rec.get("prompt", rec.get("question")))
    if rec.get("input"):
        user = f"{user}\n\n{rec['input']}"
    resp = rec.get("output", rec.get("completion", rec.get("answer")))
    resp = re.sub(re.escape(EOT) + r"\s*$", "", resp)
    return [("user", norm(user)), ("assistant", norm(resp))]


def main() -> int:
    if "--check" in sys.argv[1:]:
        return check()
    _, blobs = build()
    for name, blob in blobs.items():
        (HERE / name).write_bytes(blob)
        print(f"wrote data/{name} ({len(blob)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
