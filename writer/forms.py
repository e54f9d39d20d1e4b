from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm

from mesu_web.errors import ApplicationError
from writer import roles
from writer.models import AUTHOR_NOTE_MAX_CHARS, MAX_OPTIONS, Story, StoryBibleEntry
from writer.text_input import decode_text_file


class SignupForm(UserCreationForm):
    role = forms.ChoiceField(choices=roles.SIGNUP_ROLES, widget=forms.RadioSelect, initial=roles.AUTHOR)
    # Issue 17: readers under 18 never get a sponsored chapter. Required for readers; authors may answer.
    adult = forms.ChoiceField(
        choices=(("yes", "Yes, I am 18 or older"), ("no", "No, I am under 18")),
        widget=forms.RadioSelect,
        required=False,
        label="Are you 18 or older?",
        help_text="Readers under 18 never get chapters with a paid placement.",
    )

    class Meta(UserCreationForm.Meta):
        fields = ("username",)

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("role") == roles.READER and not cleaned.get("adult"):
            self.add_error("adult", "Readers: tell us whether you are 18 or older.")
        return cleaned

    def age_said(self) -> bool | None:
        """True: 18 or older; False: under 18; None: not said."""
        answer = self.cleaned_data.get("adult")
        return {"yes": True, "no": False}.get(answer)


class StoryForm(forms.ModelForm):
    tags = forms.CharField(required=False, help_text="Comma-separated, e.g. enemies-to-lovers, slow burn")

    class Meta:
        model = Story
        fields = [
            "title", "author_name", "summary", "genre", "tags", "characters", "setting", "intent_notes",
            "author_note",
        ]  # fmt: skip
        labels = {
            "intent_notes": "Notes on creative intent",
            "author_name": "Author name (as shown)",
            "author_note": "Author's note",
        }
        help_texts = {
            "author_note": (
                f"Up to {AUTHOR_NOTE_MAX_CHARS} characters that steer every next chapter the writer writes "
                "for this story, yours and your readers', until you change it, e.g. “keep the tone wry; "
                "Juno should not learn the secret yet”. Only you see it."
            )
        }
        widgets = {
            "summary": forms.Textarea(attrs={"rows": 3}),
            "characters": forms.Textarea(attrs={"rows": 3}),
            "setting": forms.Textarea(attrs={"rows": 2}),
            "intent_notes": forms.Textarea(attrs={"rows": 3}),
            "author_note": forms.Textarea(attrs={"rows": 2, "maxlength": AUTHOR_NOTE_MAX_CHARS}),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance and self.instance.pk:
            self.initial["tags"] = ", ".join(self.instance.tags)

    def clean_tags(self) -> list[str]:
        return [t.strip() for t in self.cleaned_data["tags"].split(",") if t.strip()]

    def clean_author_note(self) -> str:
        """Cleaned like chapter text and held to AUTHOR_NOTE_MAX_CHARS (writer.services checks it again)."""
        from writer.services import author_note_clean  # local: services import far more than a form needs

        try:
            return author_note_clean(self.cleaned_data.get("author_note", ""))
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from None


def _read_upload(upload) -> str:  # noqa: ANN001 (an UploadedFile)
    """Decode an uploaded file, refusing oversize ones before reading them into memory."""
    if upload.size > settings.MESU_UPLOAD_MAX_BYTES:
        mb = upload.size / 1024 / 1024
        limit = settings.MESU_UPLOAD_MAX_BYTES / 1024 / 1024
        raise forms.ValidationError(f"'{upload.name}' is {mb:.1f} MB; the limit is {limit:.1f} MB.")
    try:
        return decode_text_file(upload.read(), filename=upload.name, max_bytes=settings.MESU_UPLOAD_MAX_BYTES)
    except ApplicationError as exc:
        raise forms.ValidationError(exc.message) from None


class ChapterForm(forms.Form):
    title = forms.CharField(max_length=200, required=False)
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 16}), required=False, strip=False, label="Paste the chapter"
    )
    file = forms.FileField(required=False, label="…or upload a .txt / .md file")
    # Issue 17 (DSA Art. 26): the author's own commercial content, shown to readers above the chapter.
    commercial_note = forms.CharField(
        max_length=200,
        required=False,
        label="Commercial content you declare",
        help_text='Leave empty unless you were paid or gifted something this chapter features, e.g. "Gifted by '
        'Acme Tea". Readers see "The author declares: …" above the chapter.',
    )

    def __init__(self, *args, allow_file: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["text"].max_length = settings.MESU_CHAPTER_MAX_CHARS
        if not allow_file:
            del self.fields["file"]

    def clean(self) -> dict:
        data = super().clean()
        upload = data.get("file")
        if upload:
            if data.get("text", "").strip():
                raise forms.ValidationError("Paste the text or upload a file, not both.")
            data["text"] = _read_upload(upload)
            data["from_file"] = True
        elif not data.get("text", "").strip() and "text" not in self.errors:
            raise forms.ValidationError("The chapter is empty: paste some text or choose a file.")
        return data


class BookImportForm(forms.Form):
    title = forms.CharField(max_length=200)
    author_name = forms.CharField(max_length=120, required=False)
    file = forms.FileField(label="Book file (.txt or .md)")

    def clean_file(self) -> str:
        return _read_upload(self.cleaned_data["file"])


class GenerateForm(forms.Form):
    n = forms.TypedChoiceField(
        choices=[(i, f"{i} option{'s' if i > 1 else ''}") for i in range(1, MAX_OPTIONS + 1)],
        coerce=int,
        initial=3,
        label="How many options",
    )


class PreferenceForm(forms.Form):
    preference = forms.CharField(
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "e.g. a bit sad, not a tragedy"}),
        label="What would you like to happen?",
    )


class AcceptOptionForm(forms.Form):
    title = forms.CharField(max_length=200, required=False)
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 14}), strip=False)


class BibleEntryForm(forms.Form):
    """A story bible entry; writer.bible checks it again (and for duplicate names) when it is saved."""

    kind = forms.ChoiceField(choices=StoryBibleEntry.Kind.choices, initial=StoryBibleEntry.Kind.CHARACTER)
    name = forms.CharField(max_length=80, help_text="As the chapters write it, e.g. Juno Vale.")
    aliases = forms.CharField(
        max_length=1000,
        required=False,
        help_text="Other names the chapters use for it, comma-separated, e.g. Juno, the courier.",
    )
    description = forms.CharField(
        max_length=2000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="What the writer should keep to. It goes into the prompt when a chapter mentions the entry.",
    )
    from_chapter = forms.IntegerField(min_value=1, initial=1, label="True from chapter")
    until_chapter = forms.IntegerField(
        min_value=1, required=False, label="Until chapter", help_text="Empty: from then on."
    )

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("from_chapter"), data.get("until_chapter")
        if start is not None and end is not None and end < start:
            self.add_error(
                "until_chapter", f"“Until chapter” ({end}) is before “true from chapter” ({start})."
            )
        return data
