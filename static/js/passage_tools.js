/* Passage tools (writer.passages), progressive enhancement: a selection inside ONE text (an option's or a
   chapter's `.prose`) fills the passage box of the tools' form in the same <article>, with which of the
   passage's occurrences in that text it is (the server finds the passage in the stored text; the page shows
   it rendered, so character offsets on the page are not offsets in the text). A selection that runs across
   two texts fills nothing and says so. Without this script the author pastes the passage. */
(function () {
  "use strict";
  if (window.mesuPassageTools) {
    return;
  }
  window.mesuPassageTools = true;

  function proseOf(node) {
    var element = node && (node.nodeType === 1 ? node : node.parentElement);
    return element ? element.closest(".prose") : null;
  }

  function formOf(prose) {
    var article = prose ? prose.closest("article") : null;
    return article ? article.querySelector("form.passage-form") : null;
  }

  function squash(text) {
    return text.replace(/\s+/g, " ").trim();
  }

  // Which occurrence of `needle` the selection is: the non-overlapping matches in the text up to the end of
  // the selection, counted as the server counts them.
  function occurrence(prose, range, selected) {
    var upTo = document.createRange();
    upTo.setStart(prose, 0);
    upTo.setEnd(range.endContainer, range.endOffset);
    var haystack = squash(upTo.toString());
    var needle = squash(selected);
    var count = 0;
    var at = haystack.indexOf(needle);
    while (at !== -1) {
      count += 1;
      at = haystack.indexOf(needle, at + needle.length);
    }
    return Math.max(count, 1);
  }

  function say(form, text, refused) {
    var line = form.querySelector(".passage-selection");
    if (line) {
      line.textContent = text;
      line.classList.toggle("refused", Boolean(refused));
    }
  }

  function onSelection() {
    var selection = window.getSelection();
    if (!selection || selection.isCollapsed || !selection.rangeCount) {
      return;
    }
    var first = proseOf(selection.anchorNode);
    var last = proseOf(selection.focusNode);
    if (!first && !last) {
      return;
    }
    var form = formOf(first) || formOf(last);
    if (!form) {
      return;
    }
    if (first !== last) {
      say(form, first && last
        ? "Select a passage inside one chapter: this selection runs across two texts."
        : "Select a passage inside the text only.", true);
      return;
    }
    var text = selection.toString();
    if (!text.trim()) {
      return;
    }
    form.elements.passage.value = text;
    form.elements.occurrence.value = String(occurrence(first, selection.getRangeAt(0), text));
    var details = form.closest("details");
    if (details) {
      details.open = true;
    }
    say(form, "Selected " + squash(text).length + " characters of this text.", false);
  }

  document.addEventListener("mouseup", function () {
    window.setTimeout(onSelection, 0);
  });
  document.addEventListener("keyup", function (event) {
    if (event.shiftKey || event.key === "Shift") {
      onSelection();
    }
  });
  // A passage typed or pasted by hand is found by its words alone.
  document.addEventListener("input", function (event) {
    var target = event.target;
    if (target && target.name === "passage" && target.form && target.form.classList.contains("passage-form")) {
      target.form.elements.occurrence.value = "";
    }
  });
})();
