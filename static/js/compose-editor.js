// The body of the compose dialog: a rich-text editor (Squire, vendored under
// static/vendor/squire/, with DOMPurify turning loaded and pasted HTML into safe nodes) and
// a plain-text textarea, with a toolbar and a "Plain text" switch that converts between them.
// compose.js creates it with window.Satchel.composeEditor(root, {onChange}).
(function () {
  "use strict";

  const QUOTE_STYLE = "margin:0 0 0 0.8ex;border-left:2px solid #ccc;padding-left:1ex";
  const MODE_KEY = "satchel.compose.mode";
  const MAC = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent);
  const BLOCKS = new Set(["ADDRESS", "BLOCKQUOTE", "DIV", "DL", "DT", "DD", "FIGURE", "H1", "H2", "H3", "H4", "H5", "H6", "HR", "LI", "OL", "P", "PRE", "SECTION", "TABLE", "TR", "UL"]);

  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }

  // Plain text -> HTML: one block per line, lines quoted with ">" in nested blockquotes.
  function textToHtml(text) {
    function render(lines) {
      let out = "";
      for (let i = 0; i < lines.length; ) {
        if (lines[i].startsWith(">")) {
          const run = [];
          while (i < lines.length && lines[i].startsWith(">")) run.push(lines[i++].replace(/^> ?/, ""));
          out += `<blockquote type="cite" style="${QUOTE_STYLE}">${render(run)}</blockquote>`;
        } else {
          const line = lines[i++];
          out += line ? `<div>${escapeHtml(line)}</div>` : "<div><br></div>";
        }
      }
      return out;
    }
    return render((text || "").replace(/\r\n?/g, "\n").split("\n"));
  }

  // HTML (a DOM node) -> plain text: blocks on their own lines, "> " before quoted lines,
  // "- " or "1. " before list items, a link's address after its words.
  function nodeToText(node) {
    let out = "";
    const endLine = () => {
      if (out && !out.endsWith("\n")) out += "\n";
    };
    node.childNodes.forEach((child) => {
      if (child.nodeType === Node.TEXT_NODE) {
        out += child.data.replace(/[\s\u00a0]+/g, " ");
        return;
      }
      if (child.nodeType !== Node.ELEMENT_NODE) return;
      const tag = child.nodeName;
      if (tag === "BR") {
        // A block's closing <br> only keeps an empty block open; it is not a line of its own.
        if (!child.nextSibling && BLOCKS.has(node.nodeName) && out && !out.endsWith("\n")) return;
        out += "\n";
      } else if (tag === "BLOCKQUOTE") {
        endLine();
        const inner = nodeToText(child).replace(/\n+$/, "");
        out += inner.split("\n").map((line) => (line.startsWith(">") ? ">" : "> ") + line).join("\n") + "\n";
      } else if (tag === "UL" || tag === "OL") {
        endLine();
        let number = 0;
        child.querySelectorAll(":scope > li").forEach((item) => {
          const marker = tag === "OL" ? `${++number}. ` : "- ";
          out += marker + nodeToText(item).replace(/\n+$/, "").replace(/\n/g, "\n" + " ".repeat(marker.length)) + "\n";
        });
      } else if (tag === "A") {
        const label = nodeToText(child);
        const href = child.getAttribute("href") || "";
        out += label;
        if (href && href.replace(/^mailto:/, "") !== label.trim()) out += ` <${href}>`;
      } else if (BLOCKS.has(tag)) {
        endLine();
        out += nodeToText(child);
        endLine();
      } else {
        out += nodeToText(child);
      }
    });
    return out;
  }

  function htmlToText(html) {
    const doc = new DOMParser().parseFromString(html || "", "text/html"); // inert: nothing runs
    return nodeToText(doc.body).replace(/[ \t]+\n/g, "\n").replace(/\n+$/, "");
  }

  function sanitize(html) {
    const fragment = window.DOMPurify.sanitize(html, {
      RETURN_DOM_FRAGMENT: true,
      FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"],
      FORBID_ATTR: ["id", "class"],
    });
    return document.importNode(fragment, true);
  }

  function linkTarget(typed) {
    const value = typed.trim();
    if (!value) return "";
    if (/^[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+$/.test(value)) return "mailto:" + value;
    if (/^(https?:|mailto:)/i.test(value)) return value;
    return "https://" + value;
  }

  function composeEditor(root, { onChange }) {
    const toolbar = root.querySelector(".compose-toolbar");
    const richNode = root.querySelector(".compose-rich");
    const textarea = root.querySelector("textarea");
    const plainButton = root.querySelector("#compose-plain");
    const linkbar = root.querySelector("#compose-linkbar");
    const linkInput = root.querySelector("#compose-link-url");
    const tools = [...toolbar.querySelectorAll(".tool")];
    const ctrl = MAC ? "Meta-" : "Ctrl-";
    let mode = "rich";

    const squire = new window.Squire(richNode, {
      blockTag: "DIV",
      tagAttributes: { blockquote: { type: "cite", style: QUOTE_STYLE } },
      sanitizeToDOMFragment: sanitize,
    });
    const changed = () => onChange && onChange();
    squire.addEventListener("input", () => {
      updatePlaceholder();
      changed();
    });
    squire.addEventListener("pathChange", updateButtons);
    squire.addEventListener("select", updateButtons);
    textarea.addEventListener("input", changed);
    squire.setKeyHandler(ctrl + "k", (self, event) => {
      event.preventDefault();
      openLinkbar();
    });

    function updatePlaceholder() {
      richNode.classList.toggle("empty", !richNode.textContent.trim() && !richNode.querySelector("li, img, blockquote"));
    }

    function inPath(tag) {
      return new RegExp(`(^|>)${tag}\\b`).test(squire.getPath());
    }

    function updateButtons() {
      const state = {
        bold: squire.hasFormat("B"),
        italic: squire.hasFormat("I"),
        underline: squire.hasFormat("U"),
        ul: inPath("UL"),
        ol: inPath("OL"),
        quote: inPath("BLOCKQUOTE"),
        link: squire.hasFormat("A"),
      };
      tools.forEach((button) => {
        const format = button.dataset.format;
        if (format in state) button.setAttribute("aria-pressed", String(state[format]));
      });
    }

    const actions = {
      bold: () => (squire.hasFormat("B") ? squire.removeBold() : squire.bold()),
      italic: () => (squire.hasFormat("I") ? squire.removeItalic() : squire.italic()),
      underline: () => (squire.hasFormat("U") ? squire.removeUnderline() : squire.underline()),
      ul: () => (inPath("UL") ? squire.removeList() : squire.makeUnorderedList()),
      ol: () => (inPath("OL") ? squire.removeList() : squire.makeOrderedList()),
      quote: () => (inPath("BLOCKQUOTE") ? squire.decreaseQuoteLevel() : squire.increaseQuoteLevel()),
      link: () => openLinkbar(),
      clear: () => squire.removeAllFormatting(),
    };

    // The toolbar keeps the editor's selection (no focus on mouse down) and is one tab stop:
    // arrow keys move between its buttons.
    toolbar.addEventListener("mousedown", (event) => {
      if (event.target.closest(".tool")) event.preventDefault();
    });
    toolbar.addEventListener("click", (event) => {
      const button = event.target.closest(".tool");
      if (!button || button.disabled) return;
      if (button === plainButton) return setMode(mode === "rich" ? "plain" : "rich", true);
      actions[button.dataset.format]();
      if (button.dataset.format !== "link") squire.focus();
      updateButtons();
      changed();
    });
    tools.forEach((button, index) => button.setAttribute("tabindex", index === 0 ? "0" : "-1"));
    toolbar.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowRight" && event.key !== "ArrowLeft" && event.key !== "Home" && event.key !== "End") return;
      const usable = tools.filter((button) => !button.disabled && button.offsetParent !== null);
      const at = usable.indexOf(document.activeElement);
      let next = event.key === "Home" ? 0 : event.key === "End" ? usable.length - 1 : at + (event.key === "ArrowRight" ? 1 : -1);
      next = (next + usable.length) % usable.length;
      event.preventDefault();
      tools.forEach((button) => button.setAttribute("tabindex", "-1"));
      usable[next].setAttribute("tabindex", "0");
      usable[next].focus();
    });

    // Links -----------------------------------------------------------------------------
    let savedRange = null;

    function openLinkbar() {
      if (mode !== "rich") return;
      savedRange = squire.getSelection();
      const current = richNode.ownerDocument.getSelection();
      const anchor = current && current.anchorNode && (current.anchorNode.nodeType === 1 ? current.anchorNode : current.anchorNode.parentElement);
      const link = anchor && anchor.closest && anchor.closest("a");
      linkInput.value = link && richNode.contains(link) ? link.getAttribute("href") || "" : "";
      linkbar.hidden = false;
      linkInput.focus();
      linkInput.select();
    }

    function closeLinkbar() {
      linkbar.hidden = true;
      if (savedRange) squire.setSelection(savedRange);
      squire.focus();
    }

    function applyLink() {
      const href = linkTarget(linkInput.value);
      closeLinkbar();
      if (!href) return;
      if (savedRange && savedRange.collapsed) {
        squire.insertHTML(`<a href="${escapeHtml(href)}">${escapeHtml(linkInput.value.trim())}</a>`);
      } else {
        squire.makeLink(href);
      }
      updateButtons();
      changed();
    }

    root.querySelector("#compose-link-apply").addEventListener("click", applyLink);
    root.querySelector("#compose-link-cancel").addEventListener("click", closeLinkbar);
    root.querySelector("#compose-link-remove").addEventListener("click", () => {
      closeLinkbar();
      squire.removeLink();
      updateButtons();
      changed();
    });
    linkInput.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.ctrlKey && !event.metaKey) {
        event.preventDefault();
        applyLink();
      } else if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        closeLinkbar();
      }
    });

    // Modes -----------------------------------------------------------------------------

    function setMode(next, convert) {
      if (next === mode) return;
      if (convert) {
        if (next === "plain") textarea.value = htmlToText(squire.getHTML());
        else squire.setHTML(textToHtml(textarea.value));
      }
      mode = next;
      root.dataset.mode = mode;
      richNode.hidden = mode !== "rich";
      textarea.hidden = mode !== "plain";
      linkbar.hidden = true;
      plainButton.setAttribute("aria-pressed", String(mode === "plain"));
      tools.forEach((button) => {
        if (button !== plainButton) button.disabled = mode !== "rich";
      });
      try {
        localStorage.setItem(MODE_KEY, mode);
      } catch (error) {
        /* private mode: the choice is not remembered */
      }
      updatePlaceholder();
      if (convert) {
        focus();
        changed();
      }
    }

    function focus(atStart) {
      if (mode === "rich") {
        squire.focus();
        if (atStart) squire.moveCursorToStart();
      } else {
        textarea.focus();
        if (atStart) {
          textarea.setSelectionRange(0, 0);
          textarea.scrollTop = 0;
        }
      }
    }

    const editor = {
      mode: () => mode,
      setMode: (next) => setMode(next, true),
      // {html, text} for sending: html only in rich mode, with its text alternative (one line
      // per block: the server's own conversion would put a blank line between Squire's divs).
      value() {
        if (mode === "plain") return { text: textarea.value, html: null };
        const html = squire.getHTML();
        return { text: htmlToText(html), html };
      },
      text: () => (mode === "plain" ? textarea.value : htmlToText(squire.getHTML())),
      isEmpty: () => !editor.text().trim(),
      // Fill with html (rich) or text (plain text, or rich when the user prefers it).
      setContent({ html, text }) {
        if (html) {
          setMode("rich", false);
          squire.setHTML(html);
          textarea.value = "";
        } else {
          setMode(preferredMode(), false);
          textarea.value = text || "";
          squire.setHTML(textToHtml(text || ""));
        }
        updatePlaceholder();
        updateButtons();
      },
      clear() {
        editor.setContent({ text: "" });
      },
      focus,
    };

    function preferredMode() {
      try {
        return localStorage.getItem(MODE_KEY) === "plain" ? "plain" : "rich";
      } catch (error) {
        return "rich";
      }
    }

    editor.clear();
    return editor;
  }

  window.Satchel = Object.assign(window.Satchel || {}, { composeEditor, htmlToText, textToHtml });
})();
