"""The documentation's relative links (figures, other pages, files) point at files that exist."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "examples").rglob("*.md")), *sorted((ROOT / "benchmarks").rglob("*.md"))]


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # web addresses and anchors in the same page
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert len(PAGES) > 5 and not broken, broken


def test_every_documented_train_command_names_options_that_exist():
    """Each `imxlate train` line in the docs' code blocks uses options of `imxlate train` or of the family it
    picks (--family / --model, else cyclegan): a renamed or removed option shows up here."""
    import dataclasses

    from imxlate.config import TrainConfig
    from imxlate.families import family_class

    common = {"--resume", "--quiet", "--help"} | {
        flag for f in dataclasses.fields(TrainConfig) for flag in f.metadata.get("flags", [f"--{f.name.replace('_', '-')}"])}
    unknown, seen = [], 0
    for page in PAGES:
        for block in re.findall(r"```[a-z]*\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():  # continued lines joined
                words = line.split("#")[0].split()
                if "imxlate" not in words or "train" not in words[words.index("imxlate"):][1:2]:
                    continue
                seen += 1
                args = words[words.index("imxlate") + 2:]
                family = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--family", "--model")), "cyclegan")
                own = {f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(family_class(family).Config)}
                unknown += [f"{page.relative_to(ROOT)}: {a}" for a in args
                            if a.startswith("--") and a.split("=")[0] not in common | own]
    assert seen >= 3 and not unknown, unknown
