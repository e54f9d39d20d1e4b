/* Viewable impressions and disclosure-panel opens of sponsored chapters (issue 17).

   A block with data-impression-url (the chapter's or the option's text) carries a placement; its
   data-placed-passage is the passage that names the brand. The passage is wrapped in a span
   (.placed-passage) when it is found in the rendered text, else the whole block is watched. Once the
   watched element has stayed at least half on screen (or fills at least half of the screen) for one
   second, one POST with the CSRF token records the impression; the server counts it once per reader and
   option anyway. A <details data-open-url> posts each time it is opened. Nothing is written by a page
   read: without JavaScript nothing is counted. Works again after htmx swaps content in. */
(function () {
  "use strict";
  if (window.mesuImpressions) {
    window.mesuImpressions.scan(document);
    return;
  }
  var VISIBLE_RATIO = 0.5;
  var DWELL_MS = 1000;

  function csrfToken() {
    try {
      var headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
      if (headers["X-CSRFToken"]) return headers["X-CSRFToken"];
    } catch (e) { /* fall through to the cookie */ }
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function post(url) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), "X-Requested-With": "fetch" },
    }).catch(function () { /* a lost event is not worth an error on the reader's page */ });
  }

  function normalise(text) {
    return text.replace(/[*_~]/g, "").replace(/\s+/g, " ").trim();
  }

  /* The passage as a span inside `block`, or null. Text nodes are joined with whitespace collapsed, and
     the passage (markdown marks removed) is looked for in that; a passage that crosses a paragraph is
     not wrapped: the paragraph where it starts is watched instead. */
  function wrapPassage(block, passage) {
    var wanted = normalise(passage || "");
    if (!wanted) return null;
    var walker = document.createTreeWalker(block, NodeFilter.SHOW_TEXT);
    var joined = "";
    var map = []; // map[i] = [node, offset] of joined[i]
    var lastSpace = true;
    for (var node = walker.nextNode(); node; node = walker.nextNode()) {
      var value = node.nodeValue;
      for (var i = 0; i < value.length; i++) {
        var ch = value[i];
        if (/\s/.test(ch)) {
          if (lastSpace) continue;
          ch = " ";
          lastSpace = true;
        } else {
          if ("*_~".indexOf(ch) >= 0) continue;
          lastSpace = false;
        }
        joined += ch;
        map.push([node, i]);
      }
    }
    var at = joined.indexOf(wanted);
    if (at < 0) return null;
    var start = map[at], end = map[at + wanted.length - 1];
    var range = document.createRange();
    range.setStart(start[0], start[1]);
    range.setEnd(end[0], end[1] + 1);
    var span = document.createElement("span");
    span.className = "placed-passage";
    if (start[0] === end[0]) {
      range.surroundContents(span);
      return span;
    }
    var startBlock = start[0].parentElement.closest("p, blockquote, h1, h2, h3, h4, h5, h6");
    var endBlock = end[0].parentElement.closest("p, blockquote, h1, h2, h3, h4, h5, h6");
    if (startBlock && startBlock === endBlock) {
      span.appendChild(range.extractContents());
      range.insertNode(span);
      return span;
    }
    return startBlock;
  }

  function watch(block) {
    var url = block.getAttribute("data-impression-url");
    var target = wrapPassage(block, block.getAttribute("data-placed-passage")) || block;
    block.setAttribute("data-impression-state", "watching");
    if (!("IntersectionObserver" in window)) return;
    var timer = null;
    var sent = false;
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        var screen = entry.rootBounds ? entry.rootBounds.height : window.innerHeight;
        var visible = entry.isIntersecting && (
          entry.intersectionRatio >= VISIBLE_RATIO || entry.intersectionRect.height >= VISIBLE_RATIO * screen
        );
        if (visible && !timer && !sent) {
          timer = window.setTimeout(function () {
            sent = true;
            observer.disconnect();
            block.setAttribute("data-impression-state", "sending");
            post(url).then(function () { block.setAttribute("data-impression-state", "sent"); });
          }, DWELL_MS);
        } else if (!visible && timer) {
          window.clearTimeout(timer);
          timer = null;
        }
      });
    }, { threshold: [0, 0.25, 0.5, 0.75, 1] });
    observer.observe(target);
  }

  function scan(root) {
    root.querySelectorAll("[data-impression-url]:not([data-impression-state])").forEach(watch);
    root.querySelectorAll("details[data-open-url]:not([data-open-watched])").forEach(function (details) {
      details.setAttribute("data-open-watched", "1");
      details.addEventListener("toggle", function () {
        if (details.open) post(details.getAttribute("data-open-url"));
      });
    });
  }

  window.mesuImpressions = { scan: scan };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { scan(document); });
  } else {
    scan(document);
  }
  document.addEventListener("htmx:afterSettle", function () { scan(document); });
})();
