from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.urls import reverse
from django.utils.functional import cached_property

from mesu_web.jobs.models import JobRow
from writer.quality import TextQuality, text_quality

MAX_OPTIONS = 4  # options per generation request (the UI offers 1-4, 3 by default)
AUTHOR_NOTE_MAX_CHARS = 600  # the author's note: a few lines of steering, kept whole in every prompt


class Story(models.Model):
    """A story. Its metadata is "chapter 0": it heads every prompt."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stories")
    slug = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=200)
    author_name = models.CharField(max_length=120, blank=True)
    summary = models.TextField(blank=True)
    genre = models.CharField(max_length=80, blank=True)
    tags = ArrayField(models.CharField(max_length=40), default=list, blank=True)
    characters = models.TextField(blank=True, help_text="Who is who: names, roles, traits.")
    setting = models.TextField(blank=True, help_text="Where and when the story happens.")
    intent_notes = models.TextField(blank=True, help_text="What the author wants the story to be.")
    # A short steering text kept until the author changes it; it goes into every next request's prompt
    # (the author's and the readers'), after the chapters. Only the owner sees or edits it.
    author_note = models.TextField(
        blank=True, help_text="Steers the next chapters the writer writes, until you change it."
    )
    is_published = models.BooleanField(default=False)
    # A branch: a copy of another story's chapter 0 and chapters 1..branch_point, so that the writer can
    # continue from that chapter while the original keeps every chapter after it intact.
    branch_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="branches"
    )
    branch_point = models.PositiveIntegerField(
        null=True, blank=True, help_text="The last chapter of the original this branch starts from."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        verbose_name_plural = "stories"

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("writer:story_detail", args=[self.slug])


class Chapter(models.Model):
    class Source(models.TextChoices):
        PASTED = "pasted", "Pasted"
        UPLOADED = "uploaded", "Uploaded"
        IMPORTED = "imported", "Imported from a book"
        GENERATED = "generated", "Written with the AI writer"

    story = models.ForeignKey(Story, on_delete=models.CASCADE, related_name="chapters")
    number = models.PositiveIntegerField(
        help_text="1-based reading order; chapter 0 is the story's metadata."
    )
    title = models.CharField(max_length=200, blank=True)
    text = models.TextField()
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.PASTED)
    # The author's own commercial content in this chapter (e.g. "Gifted by Acme"), shown as a disclosure.
    commercial_note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["story", "number"]
        constraints = [
            # Deferred so that a reorder can swap numbers inside one transaction.
            models.UniqueConstraint(
                fields=["story", "number"],
                name="chapter_unique_number",
                deferrable=models.Deferrable.DEFERRED,
            ),
            models.CheckConstraint(condition=Q(number__gte=1), name="chapter_number_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.story.title} — {self.display_title}"

    def get_absolute_url(self) -> str:
        return reverse("writer:chapter_detail", args=[self.story.slug, self.number])

    @property
    def display_title(self) -> str:
        return self.title or f"Chapter {self.number}"


class GenerationRequest(JobRow):
    """One ask for a next chapter. Job state is this row; the UI reads it, never Celery's state."""

    class Kind(models.TextChoices):
        AUTHOR = "author", "Author's next chapter"
        READER = "reader", "Reader's personalised chapter"

    story = models.ForeignKey(Story, on_delete=models.CASCADE, related_name="generation_requests")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generation_requests"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.AUTHOR)
    preference = models.TextField(blank=True, help_text="The reader's wish, in plain words.")
    n = models.PositiveSmallIntegerField(default=3)
    engine = models.CharField(max_length=16)
    adapter = models.CharField(max_length=64, blank=True)
    max_new_tokens = models.PositiveIntegerField()
    next_number = models.PositiveIntegerField(help_text="The chapter number being written.")

    stage = models.CharField(max_length=200, blank=True)
    progress_tokens = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    prompt_report = models.JSONField(default=dict, blank=True)
    # Brand placements: decided when the request is made (story opt-in, reader's switch, `--brands`).
    use_brands = models.BooleanField(default=False)
    brand_note = models.TextField(blank=True, help_text="Which brands were matched, or why none was.")
    # A partner's request through the API (issue 17): for that partner's brand only; only that partner reads it.
    partner = models.ForeignKey(
        "brands.Partner", null=True, blank=True, on_delete=models.SET_NULL, related_name="requests"
    )
    requested_brand = models.ForeignKey(
        "brands.Brand", null=True, blank=True, on_delete=models.SET_NULL, related_name="requested_in"
    )
    model_name = models.CharField(max_length=128, blank=True)
    # Where the ask came from (mesu_web.ratelimit.client_address), for the per-address quota
    # (writer/quotas.py); empty for requests made by the partner API or before addresses were kept.
    client_address = models.GenericIPAddressField(null=True, blank=True)

    class Meta(JobRow.Meta):
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(n__gte=1) & Q(n__lte=MAX_OPTIONS), name="request_n_in_range"),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["requested_by", "created_at"], name="request_user_recent"),
            models.Index(fields=["client_address", "created_at"], name="request_address_recent"),
        ]

    def __str__(self) -> str:
        return f"Request {self.pk} for {self.story} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("writer:request_detail", args=[self.pk])

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        expected = self.n * self.max_new_tokens
        return min(99, round(100 * self.progress_tokens / expected)) if expected else 0


class ReviewStatus(models.TextChoices):
    NONE = "none", "No brand"
    NOT_SENT = "not_sent", "Brand not named: not sent for review"
    PENDING = "pending", "Waiting for the brand's review"
    APPROVED = "approved", "Approved by the brand"
    REJECTED = "rejected", "Rejected by the brand"
    CHANGES = "changes", "Changes requested by the brand"
    HELD = "held", "Names a brand it may not carry: held back"


class GenerationOption(models.Model):
    """One candidate next chapter. Output that misses the answer format is kept, flagged, never dropped."""

    ReviewStatus = ReviewStatus

    request = models.ForeignKey(GenerationRequest, on_delete=models.CASCADE, related_name="options")
    index = models.PositiveSmallIntegerField()
    raw_output = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)
    text = models.TextField(blank=True)
    format_ok = models.BooleanField(default=False)
    warning = models.CharField(max_length=300, blank=True)
    tokens = models.PositiveIntegerField(default=0)
    finish_reason = models.CharField(max_length=32, blank=True)
    accepted_chapter = models.OneToOneField(
        Chapter, null=True, blank=True, on_delete=models.SET_NULL, related_name="from_option"
    )
    # The brand this option was asked to carry, where its asset is named (character offsets into
    # `text`), and the brand manager's review of it.
    brand = models.ForeignKey(
        "brands.Brand", null=True, blank=True, on_delete=models.SET_NULL, related_name="options"
    )
    asset = models.ForeignKey(
        "brands.BrandAsset", null=True, blank=True, on_delete=models.SET_NULL, related_name="options"
    )
    # The campaign that pays for the placement (issue 17): chosen with the asset, charged per its pricing.
    campaign = models.ForeignKey(
        "brands.Campaign", null=True, blank=True, on_delete=models.SET_NULL, related_name="options"
    )
    # Which policy rules matched the option ([{"rule": ..., "detail": ...}]), shown to its reviewers.
    policy_findings = models.JSONField(default=list, blank=True)
    placement_hint = models.CharField(max_length=200, blank=True)
    # Write first, then place: the chapter as written without the brand, and where in `text` the passage
    # rewritten to name the asset stands ([start, end]; empty when it could not be placed).
    draft = models.TextField(blank=True)
    placed_passage = models.JSONField(default=list, blank=True)
    # Write first, then place: how close the placed text stays to the draft ({"rouge_l", "bertscore"}).
    placement_similarity = models.JSONField(default=dict, blank=True)
    mentions = models.JSONField(default=list, blank=True, help_text="[[start, end], ...] in text")
    reasoning_mentions = models.JSONField(
        default=list, blank=True, help_text="[[start, end], ...] in reasoning"
    )
    placement_found = models.BooleanField(default=False)
    placement_note = models.CharField(
        max_length=300,
        blank=True,
        help_text="Why the option is (or is not) a placement, when that needs saying.",
    )
    # sha256 of `text` when its brand approved it: the approval covers that text only (brands.matching).
    approved_text_hash = models.CharField(max_length=64, blank=True)
    review_status = models.CharField(max_length=10, choices=ReviewStatus.choices, default=ReviewStatus.NONE)
    review_reason = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "index"]
        constraints = [
            # Idempotency: a re-run task can never add a second set of options.
            models.UniqueConstraint(fields=["request", "index"], name="option_unique_index"),
            # Exactly one approved placement per request, even when two managers click at once.
            models.UniqueConstraint(
                fields=["request"],
                condition=Q(review_status="approved"),
                name="option_one_approved_per_request",
            ),
        ]
        indexes = [models.Index(fields=["brand", "review_status"])]

    def __str__(self) -> str:
        return f"Option {self.index + 1} of request {self.request_id}"

    @property
    def label(self) -> str:
        return f"Option {self.index + 1}"

    @property
    def placement_change(self) -> tuple[str, str] | None:
        """Write first, then place: (the passage as the chapter was written, the passage that names the
        asset); None when nothing was placed that way."""
        if not self.draft or len(self.placed_passage) != 2:
            return None
        start, end = self.placed_passage
        return self.draft[start : len(self.draft) - (len(self.text) - end)], self.text[start:end]

    @cached_property
    def quality(self) -> TextQuality:
        """Words, repeated 4-grams and the longest passage written twice, of the text as it is now."""
        return text_quality(self.text)

    @property
    def is_sponsored(self) -> bool:
        """Carries an approved paid placement: shown with the disclosure label."""
        return self.review_status == ReviewStatus.APPROVED

    @property
    def visible_to_requester(self) -> bool:
        """A reader sees a branded option only once its brand approved it (never a held one)."""
        return self.review_status in (ReviewStatus.NONE, ReviewStatus.NOT_SENT, ReviewStatus.APPROVED)

    @property
    def shows_reasoning(self) -> bool:
        """The writer's pages show the reasoning of plain options only: an option asked to carry a brand
        may repeat its brief (the brand's tone and audience), and one naming a brand names it there too.
        The brand's reviewers read it on the review page."""
        return self.review_status == ReviewStatus.NONE and self.brand_id is None


class StoryBibleEntry(models.Model):
    """A character, place, object or fact of a story, true from one chapter (and optionally until another).

    The author writes entries; the writer proposes some from the chapters (`status=proposed`), which the
    author accepts, edits or rejects. Only accepted entries reach the writer's prompt (writer.bible). A
    rejected proposal is kept so that the next proposals do not bring it back; the author may delete it.
    """

    class Kind(models.TextChoices):
        CHARACTER = "character", "Character"
        PLACE = "place", "Place"
        OBJECT = "object", "Object"
        FACT = "fact", "Fact"

    class Status(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        PROPOSED = "proposed", "Proposed by the writer"
        REJECTED = "rejected", "Rejected"

    class Source(models.TextChoices):
        AUTHOR = "author", "The author"
        WRITER = "writer", "The AI writer"

    story = models.ForeignKey(Story, on_delete=models.CASCADE, related_name="bible_entries")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CHARACTER)
    name = models.CharField(max_length=80)
    description = models.TextField(blank=True)
    aliases = ArrayField(models.CharField(max_length=80), default=list, blank=True)
    from_chapter = models.PositiveIntegerField(default=1, help_text="True from this chapter on.")
    until_chapter = models.PositiveIntegerField(
        null=True, blank=True, help_text="True up to and including this chapter; empty: from then on."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACCEPTED)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.AUTHOR)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["story", "kind", "name"]
        verbose_name = "story bible entry"
        verbose_name_plural = "story bible entries"
        constraints = [
            models.CheckConstraint(condition=Q(from_chapter__gte=1), name="bible_from_chapter_positive"),
            models.CheckConstraint(
                condition=Q(until_chapter__isnull=True) | Q(until_chapter__gte=models.F("from_chapter")),
                name="bible_until_not_before_from",
            ),
            # One live entry (accepted or proposed) per name and story, whatever its case ("Juno" and
            # "JUNO" are one name); writer.bible says so in words before the database has to.
            models.UniqueConstraint(
                models.F("story"),
                Lower("name"),
                condition=Q(status__in=["accepted", "proposed"]),
                name="bible_unique_live_name",
            ),
        ]
        indexes = [models.Index(fields=["story", "status"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()}) in {self.story_id}"

    @property
    def chapters_label(self) -> str:
        """The chapters it holds for, as a page says it: from chapter 3, chapters 3-7, chapter 4."""
        if self.until_chapter is None:
            return f"from chapter {self.from_chapter}"
        if self.until_chapter == self.from_chapter:
            return f"chapter {self.from_chapter}"
        return f"chapters {self.from_chapter}–{self.until_chapter}"


class BibleProposalRun(JobRow):
    """One ask to the writer for story bible proposals from the recent chapters (a task on the generation
    queue). The story's bible page reads it to say that proposals are being made, and what came of them."""

    RUNNING_LABEL = "Reading the chapters"

    story = models.ForeignKey(Story, on_delete=models.CASCADE, related_name="bible_proposal_runs")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    engine = models.CharField(max_length=16)
    max_new_tokens = models.PositiveIntegerField(default=320, help_text="The answer's tokens at most.")
    chapters = models.JSONField(default=list, blank=True, help_text="The chapter numbers the writer read.")
    proposed = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    skipped_lines = models.PositiveIntegerField(
        default=0, help_text="Lines of the answer that were not an entry."
    )
    not_in_chapters = models.PositiveIntegerField(
        default=0, help_text="Names the chapters read never mention."
    )
    model_name = models.CharField(max_length=128, blank=True)
    answer = models.TextField(
        blank=True, help_text="The writer's answer as it came (its first 4,000 characters)."
    )

    class Meta(JobRow.Meta):
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["story", "created_at"])]

    def __str__(self) -> str:
        return f"Bible proposals {self.pk} for story {self.story_id} ({self.status})"

    @property
    def outcome(self) -> str:
        """What came of it, in one sentence for the bible page."""
        if self.status == self.Status.FAILED:
            return f"The writer could not make proposals: {self.error}"
        if not self.is_finished:
            return ""
        read = ", ".join(str(n) for n in self.chapters) or "none"
        parts = [
            f"{self.proposed} new proposal{'s' if self.proposed != 1 else ''} from chapter"
            f"{'s' if len(self.chapters) != 1 else ''} {read}"
        ]
        if self.duplicates:
            parts.append(f"{self.duplicates} already in the bible")
        if self.not_in_chapters:
            parts.append(f"{self.not_in_chapters} not named in the chapters read")
        if self.skipped_lines:
            parts.append(
                f"{self.skipped_lines} line{'s' if self.skipped_lines != 1 else ''} of the answer skipped"
            )
        return "; ".join(parts) + "."


class OptionRating(models.Model):
    """A reader's stars (1-5) for an option of the personalised request they made: one per reader and
    option, changed by rating again (writer.preferences). Stars rather than thumbs: two options of one
    request rated 4 and 2 still make a preference pair, and the mean is a finer leaderboard column."""

    MIN_STARS, MAX_STARS = 1, 5

    option = models.ForeignKey(GenerationOption, on_delete=models.CASCADE, related_name="ratings")
    reader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    stars = models.PositiveSmallIntegerField()
    # Who wrote the option (the adapter's name, else the base model's), as it was when rated.
    writer = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["option", "reader"]
        constraints = [
            models.UniqueConstraint(fields=["option", "reader"], name="rating_one_per_reader_and_option"),
            models.CheckConstraint(condition=Q(stars__gte=1) & Q(stars__lte=5), name="rating_stars_1_to_5"),
        ]
        indexes = [models.Index(fields=["writer"])]

    def __str__(self) -> str:
        return f"{self.stars}★ for option {self.option_id} by {self.reader_id}"


class OptionPreference(models.Model):
    """One human preference between two options of one request: `chosen` over `rejected`.

    A reader's "I prefer this one" (source reader: the chosen option over each other option they were
    shown; saying it again replaces the earlier choice), or an author's acceptance (source author: the
    accepted option over each other option that could have been accepted). The writers are recorded as
    they were (adapter name, else the base model)."""

    class Source(models.TextChoices):
        READER = "reader", "A reader's choice"
        AUTHOR = "author", "An author's acceptance"

    request = models.ForeignKey(GenerationRequest, on_delete=models.CASCADE, related_name="preferences")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=8, choices=Source.choices)
    chosen = models.ForeignKey(GenerationOption, on_delete=models.CASCADE, related_name="+")
    rejected = models.ForeignKey(GenerationOption, on_delete=models.CASCADE, related_name="+")
    chosen_writer = models.CharField(max_length=128)
    rejected_writer = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "chosen", "rejected"]
        constraints = [
            models.UniqueConstraint(fields=["user", "chosen", "rejected"], name="preference_unique_pair"),
            models.CheckConstraint(condition=~Q(chosen=models.F("rejected")), name="preference_two_options"),
        ]
        indexes = [models.Index(fields=["source", "created_at"])]

    def __str__(self) -> str:
        return f"{self.source}: option {self.chosen_id} over {self.rejected_id}"


class VersionCause(models.TextChoices):
    """Why a version of an option or a chapter was made."""

    WRITTEN = "written", "Written by the writer"
    SWIPE = "swipe", "Written again (swipe)"
    EDITED = "edited", "Edited by hand"
    PASSAGE = "passage", "A passage tool's change accepted"
    ACCEPTED = "accepted", "Accepted from an option"
    RESTORED = "restored", "An earlier version restored"


class OptionVersion(models.Model):
    """Every text an option has had, the current one included (the highest number): kept when the option
    is written again (a swipe), changed by a passage tool or restored, so that none is ever lost."""

    Cause = VersionCause

    option = models.ForeignKey(GenerationOption, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField(help_text="1 for the first text, then 2, 3, ...")
    cause = models.CharField(max_length=10, choices=VersionCause.choices, default=VersionCause.WRITTEN)
    raw_output = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)
    text = models.TextField(blank=True)
    format_ok = models.BooleanField(default=False)
    tokens = models.PositiveIntegerField(default=0)
    finish_reason = models.CharField(max_length=32, blank=True)
    model_name = models.CharField(
        max_length=128, blank=True, help_text="The writer (adapter or base) that wrote it."
    )
    # Who made it and from which request (a swipe keeps its option's request; a restore names the version).
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    request = models.ForeignKey(
        GenerationRequest, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    restored_from = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["option", "number"]
        constraints = [
            models.UniqueConstraint(fields=["option", "number"], name="option_version_unique_number"),
        ]

    def __str__(self) -> str:
        return f"Version {self.number} of option {self.option_id}"


class ChapterVersion(models.Model):
    """Every text a chapter has had, the current one included (the highest number)."""

    Cause = VersionCause

    chapter = models.ForeignKey(Chapter, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField(help_text="1 for the first text, then 2, 3, ...")
    cause = models.CharField(max_length=10, choices=VersionCause.choices, default=VersionCause.EDITED)
    title = models.CharField(max_length=200, blank=True)
    text = models.TextField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The option (and so the request) it was accepted from, when it was.
    option = models.ForeignKey(
        GenerationOption, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    request = models.ForeignKey(
        GenerationRequest, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    restored_from = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["chapter", "number"]
        constraints = [
            models.UniqueConstraint(fields=["chapter", "number"], name="chapter_version_unique_number"),
        ]

    def __str__(self) -> str:
        return f"Version {self.number} of chapter {self.chapter_id}"


class OptionSwipe(JobRow):
    """One ask to write an option again (a swipe) from its request's prompt: the other options stay as
    they are, and the option's earlier text stays among its versions."""

    RUNNING_LABEL = "Writing again"

    option = models.ForeignKey(GenerationOption, on_delete=models.CASCADE, related_name="swipes")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    engine = models.CharField(max_length=16)
    adapter = models.CharField(max_length=64, blank=True)
    progress_tokens = models.PositiveIntegerField(default=0)
    version = models.ForeignKey(
        OptionVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The version it wrote.",
    )

    class Meta(JobRow.Meta):
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["option", "created_at"])]

    def __str__(self) -> str:
        return f"Swipe {self.pk} of option {self.option_id} ({self.status})"


class PassageEdit(JobRow):
    """A passage tool's change: a selected passage of one option or one chapter (never across two),
    rewritten, expanded, shortened or described with more sensory detail by the writer; shown as a change
    against the original and accepted (a new version of the option or chapter) or discarded."""

    RUNNING_LABEL = "Writing the passage"

    class Tool(models.TextChoices):
        REWRITE = "rewrite", "Rewrite"
        EXPAND = "expand", "Expand"
        SHORTEN = "shorten", "Shorten"
        DESCRIBE = "describe", "Describe (more sensory detail)"

    class Decision(models.TextChoices):
        PENDING = "pending", "Not decided"
        ACCEPTED = "accepted", "Accepted"
        DISCARDED = "discarded", "Discarded"

    story = models.ForeignKey(Story, on_delete=models.CASCADE, related_name="passage_edits")
    option = models.ForeignKey(
        GenerationOption, null=True, blank=True, on_delete=models.CASCADE, related_name="passage_edits"
    )
    chapter = models.ForeignKey(
        Chapter, null=True, blank=True, on_delete=models.CASCADE, related_name="passage_edits"
    )
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    tool = models.CharField(max_length=10, choices=Tool.choices)
    instruction = models.CharField(
        max_length=300, blank=True, help_text="An optional word on what to change."
    )
    # Character offsets of the passage in the option's or chapter's text as it was when asked, and the
    # passage itself, so that a text changed since is noticed before a result is applied.
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    original = models.TextField()
    result = models.TextField(blank=True)
    engine = models.CharField(max_length=16)
    model_name = models.CharField(max_length=128, blank=True)
    decision = models.CharField(max_length=10, choices=Decision.choices, default=Decision.PENDING)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta(JobRow.Meta):
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(option__isnull=False) & Q(chapter__isnull=True))
                | (Q(option__isnull=True) & Q(chapter__isnull=False)),
                name="passage_edit_one_target",
            ),
            models.CheckConstraint(condition=Q(end__gt=models.F("start")), name="passage_edit_not_empty"),
        ]
        indexes = [models.Index(fields=["story", "created_at"])]

    def __str__(self) -> str:
        return f"{self.get_tool_display()} {self.pk} ({self.status})"


class GenerationQuota(models.Model):
    """A user's own generation limits, set by staff (writer/quotas.py). A limit left empty falls back to
    the default of the user's role (settings GENERATION_QUOTA_*)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generation_quota")
    concurrent = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Requests queued or being written at once."
    )
    per_hour = models.PositiveIntegerField(null=True, blank=True, help_text="Requests in any 60 minutes.")
    per_day = models.PositiveIntegerField(null=True, blank=True, help_text="Requests in any 24 hours.")
    note = models.CharField(max_length=200, blank=True, help_text="Why this user has their own limits.")
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Generation quota of {self.user}"
