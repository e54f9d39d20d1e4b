"""A compact subset of the IAB Content Taxonomy (1.0 codes) that stories are classified into.

Each category has a one-line description that the embedder reads (a story's chapters are compared with it
by cosine), and flags: `health` and `politics` are sensitive topics a brand must opt in to; `floor` marks
GARM floor-level content (adult sexual content, explicit violence, hate, terrorism and illegal drugs) that
no brand is ever placed next to. Django-free, so that it can be read anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    description: str  # what the embedder compares a story with: concrete nouns a chapter would use
    health: bool = False
    politics: bool = False
    floor: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} ({self.code})"


CATEGORIES: tuple[Category, ...] = (
    Category("IAB2", "Automotive", "Cars, driving, road trips, garages, mechanics, motorbikes and traffic."),
    Category("IAB3", "Business", "Companies, offices, bosses, start-ups, shops, deals, contracts and trade."),
    Category("IAB4", "Careers", "Jobs, job interviews, work colleagues, promotions, first jobs and careers."),
    Category("IAB5", "Education", "School, classrooms, teachers, students, exams, homework and university."),
    Category(
        "IAB6",
        "Family & Parenting",
        "Parents, children, babies, siblings, grandparents and family life at home.",
    ),
    Category(
        "IAB7",
        "Health & Medicine",
        "Doctors, nurses, a hospital or clinic, patients, illness, diagnosis, treatment, surgery and medicine.",
        health=True,
    ),
    Category(
        "IAB7-17",
        "Mental Health",
        "Therapy, a therapist, depression, anxiety, grief counselling and mental illness.",
        health=True,
    ),
    Category(
        "IAB8", "Food & Drink", "Cooking, baking, recipes, restaurants, cafes, markets, meals and drinks."
    ),
    Category(
        "IAB9", "Hobbies & Interests", "Crafts, games, music, painting, photography, collecting and pastimes."
    ),
    Category("IAB10", "Home & Garden", "Houses, gardening, decorating, furniture, repairs and home life."),
    Category(
        "IAB11",
        "Law, Government & Politics",
        "Elections, politicians, political parties, government, parliament, protests, votes and laws.",
        politics=True,
    ),
    Category("IAB12", "News", "Journalists, newspapers, reporters, headlines and current events."),
    Category(
        "IAB13", "Personal Finance", "Money, savings, salaries, banks, budgets, debt, loans and paying bills."
    ),
    Category(
        "IAB14", "Society & Relationships", "Friendship, dating, romance, love, weddings and neighbours."
    ),
    Category("IAB15", "Science", "Scientists, laboratories, experiments, space, astronomy and discoveries."),
    Category("IAB16", "Pets", "Dogs, cats, pets, vets, animal care and walking the dog."),
    Category(
        "IAB17", "Sports", "Football, running, surfing, swimming, training, matches, teams and athletes."
    ),
    Category("IAB18", "Style & Fashion", "Clothes, fashion, shoes, make-up, beauty and style."),
    Category(
        "IAB19",
        "Technology & Computing",
        "Computers, phones, apps, software, robots, hackers and the internet.",
    ),
    Category("IAB20", "Travel", "Travel, holidays, trains, flights, hotels, the beach and the seaside."),
    Category("IAB22", "Shopping", "Shopping, stores, buying things, sales, prices and customers."),
    Category("IAB23", "Religion & Spirituality", "Church, faith, prayer, priests, gods, temples and belief."),
    Category(
        "IAB1-6",
        "Fantasy & Magic",
        "Wizards, magic, dragons, quests, kingdoms, spells and enchanted forests.",
    ),
    Category(
        "IAB1-7", "Crime & Mystery", "Detectives, police, crimes, a murder case, clues and investigations."
    ),
    Category(
        "IAB25-2",
        "Extreme Graphic Violence",
        "Graphic gore, torture, mutilation, massacres and explicit, bloody killing.",
        floor=True,
    ),
    Category(
        "IAB25-3",
        "Adult Sexual Content",
        "Explicit sex scenes, pornography, erotica and graphic sexual acts.",
        floor=True,
    ),
    Category(
        "IAB25-5",
        "Hate Content",
        "Hate speech, racist slurs, extremist propaganda and attacks on people for who they are.",
        floor=True,
    ),
    Category(
        "IAB26",
        "Illegal Content: Terrorism & Drugs",
        "Terrorism, bomb attacks, terrorist plots, drug trafficking, dealing heroin and cocaine.",
        floor=True,
    ),
)

BY_CODE: dict[str, Category] = {c.code: c for c in CATEGORIES}
CODES: tuple[str, ...] = tuple(BY_CODE)
HEALTH_CODES = frozenset(c.code for c in CATEGORIES if c.health)
POLITICS_CODES = frozenset(c.code for c in CATEGORIES if c.politics)
FLOOR_CODES = frozenset(c.code for c in CATEGORIES if c.floor)
# What a brand may accept or an author may choose: floor categories are never sold, so never offered.
CHOICES: tuple[tuple[str, str], ...] = tuple((c.code, c.label) for c in CATEGORIES if not c.floor)


def unknown_codes(codes: list[str] | tuple[str, ...]) -> list[str]:
    """The codes that are not in the subset (a typo, or a category this list does not have)."""
    return [c for c in codes if c not in BY_CODE]


def label(code: str) -> str:
    category = BY_CODE.get(code)
    return category.label if category else code
