"""Named corpora of public-domain novels that Debian ships, brought into the training library.

"gutenberg-classics": Jane Austen's six novels (Debian's r-cran-janeaustenr, one element per line) and
Melville's Moby-Dick (r-cran-tokenizers: Project Gutenberg's EBook #2701, header and licence included).
The texts sit in the R packages' lazy-load databases (`data/Rdata.rdx` + `Rdata.rdb`): each object is a
zlib-compressed R serialisation, which the `rdata` package reads; R itself is not needed, only the
packages' files (`apt-get install r-cran-janeaustenr r-cran-tokenizers`, or `apt-get download` and
`dpkg-deb -x` into a folder named by MESU_R_LIBRARY_DIRS).

Each book goes through the one book reader (writer.book_import, via training.library.import_book_file),
with chapter 0 (title, author, year, "public domain", the source package) from the table below, and its
chapter count checked against the count the book itself has: a book that splits differently is reported
and not imported.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mesu_web.errors import ApplicationError
from training.library import BookExistsError, ImportedBook, import_book_file

# Where R packages are installed (Debian's r-cran-* packages: /usr/lib/R/site-library).
DEFAULT_R_LIBRARY_DIRS = ("/usr/lib/R/site-library", "/usr/lib/R/library", "/usr/local/lib/R/site-library")


@dataclass(frozen=True)
class CorpusBook:
    data_set: str  # the R object's name in the package
    package: str  # the R package
    debian: str  # the Debian package that installs it
    title: str
    author: str
    year: str
    chapters: int  # the chapters the book has (counted from its own headings)
    summary: str


CORPORA: dict[str, tuple[CorpusBook, ...]] = {
    "gutenberg-classics": (
        CorpusBook(
            "emma", "janeaustenr", "r-cran-janeaustenr", "Emma", "Jane Austen", "1815", 55,
            "Emma Woodhouse, handsome, clever and rich, makes matches for her neighbours in Highbury and "
            "misreads her own heart.",
        ),
        CorpusBook(
            "mansfieldpark", "janeaustenr", "r-cran-janeaustenr", "Mansfield Park", "Jane Austen", "1814", 48,
            "Fanny Price, a poor relation raised at Mansfield Park, holds to her principles when the "
            "worldly Crawfords arrive.",
        ),
        CorpusBook(
            "northangerabbey", "janeaustenr", "r-cran-janeaustenr", "Northanger Abbey", "Jane Austen", "1817", 31,
            "Catherine Morland, a reader of Gothic novels, visits Bath and the Tilneys' abbey and learns to "
            "tell fiction from life.",
        ),
        CorpusBook(
            "persuasion", "janeaustenr", "r-cran-janeaustenr", "Persuasion", "Jane Austen", "1817", 24,
            "Eight years after she was persuaded to refuse him, Anne Elliot meets Captain Wentworth again.",
        ),
        CorpusBook(
            "prideprejudice", "janeaustenr", "r-cran-janeaustenr", "Pride and Prejudice", "Jane Austen", "1813", 61,
            "Elizabeth Bennet and Mr Darcy overcome her prejudice and his pride.",
        ),
        CorpusBook(
            "sensesensibility", "janeaustenr", "r-cran-janeaustenr", "Sense and Sensibility", "Jane Austen",
            "1811", 50,
            "The Dashwood sisters, sensible Elinor and passionate Marianne, meet love and loss after their "
            "father's death.",
        ),
        CorpusBook(
            "mobydick", "tokenizers", "r-cran-tokenizers", "Moby-Dick; or, The Whale", "Herman Melville", "1851",
            136,  # 135 chapters and the Epilogue
            "Ishmael signs on to the whaler Pequod, whose captain Ahab hunts the white whale that took his leg.",
        ),
    ),
}  # fmt: skip


def r_library_dirs() -> list[Path]:
    """The folders searched for R packages: MESU_R_LIBRARY_DIRS (os.pathsep-separated) first, then
    Debian's."""
    extra = [Path(p) for p in os.environ.get("MESU_R_LIBRARY_DIRS", "").split(os.pathsep) if p]
    return [*extra, *(Path(p) for p in DEFAULT_R_LIBRARY_DIRS)]


def _package_dir(book: CorpusBook, search: Sequence[Path]) -> Path:
    for root in search:
        if (root / book.package / "data" / "Rdata.rdx").is_file():
            return root / book.package
    raise ApplicationError(
        f"{book.title}: the R package '{book.package}' is not installed (looked in "
        f"{', '.join(str(p) for p in search)}). Install Debian's {book.debian} "
        f"(`apt-get install {book.debian}`, or `bash scripts/setup_books.sh` as root)."
    )


def package_version(package_dir: Path) -> str:
    """The R package's version from its DESCRIPTION ("" when it has none)."""
    description = package_dir / "DESCRIPTION"
    if description.is_file():
        for line in description.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return ""


def read_r_text(package_dir: Path, name: str) -> str:
    """The character vector `name` of an R package's lazy-load data, its elements joined by newlines.

    `Rdata.rdx` (an RDS file) maps each object to its (offset, length) in `Rdata.rdb`; there each object
    is a 4-byte length and a zlib stream of R's serialisation. ApplicationError when the package has no
    such object or its files are damaged."""
    import rdata

    data = package_dir / "data"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rdata warns that it "assumed RDS" for the index
            index = rdata.read_rds(data / "Rdata.rdx")
        entry = {str(k): v for k, v in index["variables"].items()}.get(name)
        if entry is None:
            raise ApplicationError(f"The R package in {package_dir} has no data set '{name}'.")
        offset, length = (int(x) for x in entry)
        with (data / "Rdata.rdb").open("rb") as db:
            db.seek(offset)
            blob = db.read(length)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = rdata.parser.parse_data(zlib.decompress(blob[4:]))
        value = rdata.conversion.convert(parsed)
    except ApplicationError:
        raise
    except Exception as exc:  # noqa: BLE001 (a damaged or foreign file: said plainly)
        raise ApplicationError(f"Could not read the data set '{name}' from {data}: {exc}") from exc
    lines = [value] if isinstance(value, str) else [str(x) for x in list(value)]
    return "\n".join(lines).lstrip("\ufeff")


@dataclass(frozen=True)
class CorpusResult:
    book: CorpusBook
    status: str  # "imported", "skipped" (already in the library) or "failed"
    reason: str = ""
    imported: ImportedBook | None = None


def import_corpus(
    name: str, *, library_dir: Path | str, overwrite: bool = False, search: Sequence[Path] | None = None
) -> list[CorpusResult]:
    """Import every book of corpus `name` into the library; one bad book never stops the others."""
    if name not in CORPORA:
        raise ApplicationError(f"No corpus named '{name}'; there are: {', '.join(sorted(CORPORA))}.")
    search = list(search) if search is not None else r_library_dirs()
    results = []
    for book in CORPORA[name]:
        try:
            package_dir = _package_dir(book, search)
            text = read_r_text(package_dir, book.data_set)
            version = package_version(package_dir)
            source = f"Debian {book.debian}, data set {book.data_set} (R package {version or '?'})"
            imported = import_book_file(
                text.encode("utf-8"),
                filename=f"{book.data_set}.txt",
                library_dir=library_dir,
                title=book.title,
                author=book.author,
                date=book.year,
                version=f"Public domain. {source}",
                summary=book.summary,
                overwrite=overwrite,
                expected_chapters=book.chapters,
            )
        except BookExistsError as exc:
            results.append(CorpusResult(book, "skipped", exc.message))
        except ApplicationError as exc:
            results.append(CorpusResult(book, "failed", exc.message))
        else:
            results.append(CorpusResult(book, "imported", imported=imported))
    return results
