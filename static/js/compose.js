// Satchel compose: the compose dialog on the mail page (templates/mail/_compose.html) and
// the live outbox page (templates/mail/outbox.html). Sends through /api/v1/mail/outbox/.
// Other scripts open the dialog with
//   document.dispatchEvent(new CustomEvent("satchel:compose", {detail: {action, id, account}}))
// where action is "new" | "reply" | "replyAll" | "forward" and id the open message's id, or
// action "draft" with id a message of a Drafts folder (or draft: the id of one of ours).
// A reply sends reply_to_message (the server sets In-Reply-To and References from it), a
// forward forward_of with forward_mode and forward_attachments; drafts remember them.
(function () {
  "use strict";

  const { el, formatSize } = window.Satchel;

  const API = "/api/v1/";
  const UNDO_SECONDS = 10;
  const DRAFT_DELAY = 3000; // ms after the last change before the draft is saved
  const CANCELLABLE = new Set(["scheduled", "queued", "retrying"]);
  const $ = (id) => document.getElementById(id);

  const csrfToken = window.Satchel.csrfToken;

  function toast(text, variant) {
    if (window.Satchel && window.Satchel.toast) window.Satchel.toast(text, variant);
  }

  // The shared client (static/js/api.js); compose shows errors itself, next to the fields.
  function api(path, options) {
    return window.Satchel.api(API + path, { ...options, quiet: true });
  }

  const results = (data) => (Array.isArray(data) ? data : (data && data.results) || []);

  function formatWhen(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return isNaN(date) ? "" : date.toLocaleString();
  }

  // -------------------------------------------------------------------------------------
  // Reply / forward helpers
  // -------------------------------------------------------------------------------------

  const PREFIX_RE = /^\s*((re|fwd?|aw|sv|wg)\s*(\[\d+\])?\s*:\s*)+/i;

  function prefixed(prefix, subject) {
    return `${prefix}: ${(subject || "").replace(PREFIX_RE, "")}`.trim();
  }

  function mailbox(person) {
    if (!person || !person.email) return "";
    return person.name ? `${person.name} <${person.email}>` : person.email;
  }

  function header(detail, name) {
    const found = (detail.headers || []).find(([key]) => key.toLowerCase() === name);
    return found ? found[1] : "";
  }

  function quote(detail) {
    const when = detail.date ? new Date(detail.date).toLocaleString() : "an earlier date";
    const who = (detail.sender && (detail.sender.name || detail.sender.email)) || "someone";
    const lines = (detail.text || "").replace(/\r\n/g, "\n").replace(/\n+$/, "").split("\n");
    return `\n\nOn ${when}, ${who} wrote:\n` + lines.map((line) => (line.startsWith(">") ? ">" : "> ") + line).join("\n") + "\n";
  }

  function forwarded(detail) {
    const list = (people) => (people || []).map(mailbox).join(", ");
    return (
      "\n\n---------- Forwarded message ----------\n" +
      `From: ${mailbox(detail.sender)}\n` +
      `Date: ${detail.date ? new Date(detail.date).toLocaleString() : ""}\n` +
      `Subject: ${detail.subject || ""}\n` +
      `To: ${list(detail.to)}\n` +
      (detail.cc && detail.cc.length ? `Cc: ${list(detail.cc)}\n` : "") +
      "\n" +
      (detail.text || "")
    );
  }

  // -------------------------------------------------------------------------------------
  // The compose dialog
  // -------------------------------------------------------------------------------------

  function setupCompose(dialog) {
    const form = $("compose-form");
    const fromSelect = $("compose-from");
    const subject = $("compose-subject");
    // The draft being written: its id once saved, change counters, the save queue.
    const draft = { id: null, changes: 0, saved: 0, timer: null, chain: Promise.resolve(), session: 0 };
    const editor = window.Satchel.composeEditor($("compose-editor"), { onChange: () => markDirty() });
    const suggest = $("compose-suggest");
    const filesList = $("compose-files");
    const fileInput = $("compose-file");
    const later = $("compose-later");
    const laterToggle = $("compose-later-toggle");
    const sendAt = $("compose-send-at");
    const dropzone = $("compose-dropzone");
    const accountsNode = $("mail-accounts-data");
    const accounts = accountsNode ? JSON.parse(accountsNode.textContent) : [];
    let identities = [];
    let groups = [];
    let peopleLoaded = null;
    let inReplyTo = null; // a resumed draft's In-Reply-To, when it does not know the message
    let answering = null; // the id of the message answered
    // The message forwarded: its id, its details (for its attachments), how it goes along.
    const forward = { of: null, original: null, mode: "inline", include: true, filled: null };
    let files = []; // {file, id, row, bar, xhr, done, failed}
    let sending = false;

    // Token inputs ----------------------------------------------------------------------

    const fields = {};
    dialog.querySelectorAll(".tokens").forEach((box) => {
      fields[box.dataset.name] = { box, input: box.querySelector("input"), tokens: [] };
    });

    function addToken(name, value, label, kind) {
      value = value.trim();
      if (!value) return;
      const field = fields[name];
      if (field.tokens.some((t) => t.value.toLowerCase() === value.toLowerCase())) return;
      const remove = el("button", { type: "button", class: "token-remove", "aria-label": `Remove ${value}`, tabindex: "-1", text: "×" });
      const node = el("span", { class: "token" + (kind === "group" ? " group" : ""), title: value, "data-value": value }, el("span", { class: "token-label", text: label || value }), remove);
      const token = { value, node };
      remove.addEventListener("click", () => {
        removeToken(name, token);
        field.input.focus();
      });
      field.tokens.push(token);
      field.box.insertBefore(node, field.input);
      clearError(name);
      markDirty();
    }

    function removeToken(name, token) {
      const field = fields[name];
      field.tokens = field.tokens.filter((t) => t !== token);
      token.node.remove();
      markDirty();
    }

    function commitTyped(name) {
      const field = fields[name];
      const typed = field.input.value;
      if (!typed.trim()) return;
      // "a@x, b@y; c@z" becomes three tokens; a group's name stays one.
      typed.split(/[,;]\s*(?=(?:[^"]*"[^"]*")*[^"]*$)/).forEach((part) => {
        const group = groups.find((g) => g.name.toLowerCase() === part.trim().toLowerCase());
        if (group) addToken(name, group.name, `${group.name} (${group.members.length})`, "group");
        else addToken(name, part);
      });
      field.input.value = "";
    }

    function loadPeople() {
      if (!peopleLoaded) {
        peopleLoaded = api("mail/groups/?page_size=500")
          .then((data) => (groups = results(data)))
          .catch(() => (groups = []));
      }
      return peopleLoaded;
    }

    // Autocomplete ----------------------------------------------------------------------

    const ac = { field: null, items: [], active: -1, token: 0, timer: null };

    function closeSuggest() {
      suggest.hidden = true;
      ac.items = [];
      ac.active = -1;
      Object.values(fields).forEach((f) => {
        f.input.setAttribute("aria-expanded", "false");
        f.input.removeAttribute("aria-activedescendant");
      });
    }

    function renderSuggest() {
      const field = fields[ac.field];
      if (!ac.items.length) return closeSuggest();
      suggest.replaceChildren(
        ...ac.items.map((item, index) =>
          el(
            "li",
            { id: `compose-option-${index}`, role: "option", class: "suggest-item" + (index === ac.active ? " active" : ""), "aria-selected": index === ac.active ? "true" : "false", "data-index": String(index) },
            el("span", { class: "suggest-name", text: item.label }),
            el("span", { class: "suggest-detail muted", text: item.detail })
          )
        )
      );
      // Under the field being typed in.
      const box = field.box.getBoundingClientRect();
      const parent = suggest.offsetParent ? suggest.offsetParent.getBoundingClientRect() : { left: 0, top: 0 };
      suggest.style.left = `${box.left - parent.left}px`;
      suggest.style.top = `${box.bottom - parent.top + 2}px`;
      suggest.style.width = `${Math.max(box.width, 260)}px`;
      suggest.hidden = false;
      field.input.setAttribute("aria-expanded", "true");
      if (ac.active >= 0) field.input.setAttribute("aria-activedescendant", `compose-option-${ac.active}`);
      else field.input.removeAttribute("aria-activedescendant");
    }

    async function updateSuggest(name) {
      const query = fields[name].input.value.trim();
      const token = ++ac.token;
      if (!query) return closeSuggest();
      await loadPeople();
      let contacts = [];
      try {
        contacts = results(await api(`mail/contacts/?q=${encodeURIComponent(query)}&page_size=8`));
      } catch (error) {
        contacts = [];
      }
      if (token !== ac.token) return;
      const lower = query.toLowerCase();
      const taken = new Set(fields[name].tokens.map((t) => t.value.toLowerCase()));
      const items = groups
        .filter((g) => g.name.toLowerCase().includes(lower))
        .map((g) => ({ value: g.name, label: g.name, detail: `Group · ${g.members.length} members`, kind: "group" }))
        .concat(
          contacts.map((c) => ({
            value: c.name ? `${c.name} <${c.email_address}>` : c.email_address,
            label: c.name || c.email_address,
            detail: c.name ? c.email_address : "",
            kind: "contact",
          }))
        )
        .filter((item) => !taken.has(item.value.toLowerCase()))
        .slice(0, 8);
      ac.field = name;
      ac.items = items;
      ac.active = items.length ? 0 : -1;
      renderSuggest();
    }

    function pick(index) {
      const item = ac.items[index];
      if (!item) return;
      const name = ac.field;
      addToken(name, item.value, item.kind === "group" ? `${item.label} (group)` : item.label, item.kind);
      fields[name].input.value = "";
      closeSuggest();
      fields[name].input.focus();
    }

    suggest.addEventListener("mousedown", (event) => {
      const item = event.target.closest(".suggest-item");
      if (!item) return;
      event.preventDefault(); // keep the focus in the input
      pick(Number(item.dataset.index));
    });

    Object.entries(fields).forEach(([name, field]) => {
      field.box.addEventListener("click", (event) => {
        if (event.target === field.box) field.input.focus();
      });
      field.input.addEventListener("input", () => {
        clearTimeout(ac.timer);
        if (/[,;]\s*$/.test(field.input.value)) {
          field.input.value = field.input.value.replace(/[,;]\s*$/, "");
          commitTyped(name);
          closeSuggest();
          return;
        }
        ac.timer = setTimeout(() => updateSuggest(name), 120);
      });
      field.input.addEventListener("keydown", (event) => {
        const open = !suggest.hidden && ac.field === name && ac.items.length;
        if (event.key === "ArrowDown" && open) {
          event.preventDefault();
          ac.active = (ac.active + 1) % ac.items.length;
          renderSuggest();
        } else if (event.key === "ArrowUp" && open) {
          event.preventDefault();
          ac.active = (ac.active - 1 + ac.items.length) % ac.items.length;
          renderSuggest();
        } else if ((event.key === "Enter" || event.key === "Tab") && !event.ctrlKey && !event.metaKey) {
          if (open && ac.active >= 0) {
            event.preventDefault();
            pick(ac.active);
          } else if (field.input.value.trim()) {
            if (event.key === "Enter") event.preventDefault();
            commitTyped(name);
            closeSuggest();
          } else if (event.key === "Enter") {
            event.preventDefault();
          }
        } else if (event.key === "Escape" && open) {
          event.preventDefault();
          event.stopPropagation();
          closeSuggest();
        } else if (event.key === "Backspace" && !field.input.value && field.tokens.length) {
          event.preventDefault();
          removeToken(name, field.tokens[field.tokens.length - 1]);
        }
      });
      field.input.addEventListener("blur", () => {
        setTimeout(() => {
          if (document.activeElement === field.input) return;
          commitTyped(name);
          if (ac.field === name) closeSuggest();
        }, 150);
      });
    });

    $("compose-show-cc").addEventListener("click", () => showCc(true));

    function showCc(focus) {
      dialog.querySelectorAll('[data-field="cc"], [data-field="bcc"]').forEach((row) => (row.hidden = false));
      $("compose-show-cc").hidden = true;
      if (focus) fields.cc.input.focus();
    }

    // From ------------------------------------------------------------------------------

    async function loadIdentities() {
      try {
        identities = results(await api("mail/identities/?page_size=500"));
      } catch (error) {
        identities = [];
      }
    }

    function fillFrom(accountId) {
      const options = [];
      accounts.forEach((account) => {
        const label = account.display_name ? `${account.display_name} <${account.email_address}>` : account.email_address;
        options.push(el("option", { value: `a:${account.id}`, text: label }));
        identities
          .filter((identity) => identity.account === account.id)
          .forEach((identity) => {
            const name = identity.name ? `${identity.name} <${identity.email_address}>` : identity.email_address;
            options.push(el("option", { value: `i:${identity.id}:${account.id}`, text: name }));
          });
      });
      fromSelect.replaceChildren(...options);
      const wanted = accountId || (accounts[0] && accounts[0].id);
      if (wanted) fromSelect.value = `a:${wanted}`;
    }

    function fromValue() {
      const [kind, id, accountId] = fromSelect.value.split(":");
      if (kind === "i") return { account: Number(accountId), identity: Number(id) };
      return { account: Number(id), identity: null };
    }

    // Attachments -------------------------------------------------------------------------

    function addFiles(list) {
      [...list].forEach(uploadFile);
    }

    // One row in the attachment list; `abort` stops it while it is still arriving.
    function fileEntry(name, size, abort) {
      const bar = el("span", { class: "upload-bar" });
      const progress = el("span", { class: "upload-progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0", "aria-label": `Uploading ${name}` }, bar);
      const status = el("span", { class: "upload-status muted", text: formatSize(size) });
      const remove = el("button", { type: "button", class: "compose-icon", "aria-label": `Remove ${name}`, text: "✕" });
      const row = el("li", { class: "compose-file uploading", "data-filename": name }, el("span", { class: "upload-name", text: name }), progress, status, remove);
      const entry = { id: null, row, bar, progress, status, done: false, failed: false, abort };
      files.push(entry);
      filesList.append(row);
      remove.addEventListener("click", () => {
        if (!entry.done) entry.abort();
        else api(`uploads/${entry.id}/`, { method: "DELETE" }).catch(() => {});
        files = files.filter((f) => f !== entry);
        row.remove();
        markDirty();
      });
      return entry;
    }

    // A finished upload (POST uploads/ or uploads/from-ftp/): ready to send.
    function uploadDone(entry, data) {
      entry.id = data.id;
      entry.done = true;
      entry.bar.style.width = "100%";
      entry.progress.setAttribute("aria-valuenow", "100");
      entry.row.classList.remove("uploading");
      entry.row.classList.add("uploaded");
      entry.row.dataset.uploadId = String(data.id);
      entry.status.textContent = formatSize(data.size);
    }

    function uploadFile(file) {
      const xhr = new XMLHttpRequest();
      const entry = fileEntry(file.name, file.size, () => xhr.abort());
      const { bar, progress, row, status } = entry;
      xhr.open("POST", API + "uploads/");
      xhr.setRequestHeader("X-CSRFToken", csrfToken);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (event) => {
        if (!event.lengthComputable) return;
        const percent = Math.round((100 * event.loaded) / event.total);
        bar.style.width = `${percent}%`;
        progress.setAttribute("aria-valuenow", String(percent));
        row.dataset.progress = String(percent);
      });
      xhr.addEventListener("load", () => {
        let data = null;
        try {
          data = JSON.parse(xhr.responseText);
        } catch (error) {
          data = null;
        }
        if (xhr.status === 201 && data) {
          uploadDone(entry, data);
          markDirty();
        } else {
          failUpload(entry, status, (data && (data.detail || (data.file && data.file.join(" ")))) || `Upload failed (${xhr.status}).`);
        }
        maybeSendQueued();
      });
      xhr.addEventListener("error", () => failUpload(entry, status, "Upload failed: Satchel could not be reached."));
      const data = new FormData();
      data.append("file", file);
      xhr.send(data);
    }

    function failUpload(entry, status, message) {
      entry.failed = true;
      entry.row.classList.remove("uploading");
      entry.row.classList.add("failed");
      status.textContent = message;
    }

    // Attach from FTP: the server copies the file into an upload (static/js/ftp_picker.js).
    async function attachFromFtp() {
      const pick = await window.Satchel.ftpPicker.open({ mode: "attach" });
      if (!pick) return;
      let removed = false;
      const entry = fileEntry(pick.name, pick.size || 0, () => {
        removed = true;
      });
      entry.row.classList.add("from-ftp");
      entry.status.textContent = "Fetching from FTP…";
      try {
        const data = await api("uploads/from-ftp/", { method: "POST", body: { site: pick.site, path: pick.path } });
        if (removed) api(`uploads/${data.id}/`, { method: "DELETE" }).catch(() => {});
        else {
          uploadDone(entry, data);
          markDirty();
        }
      } catch (error) {
        failUpload(entry, entry.status, error.message);
      }
      maybeSendQueued();
    }
    $("compose-ftp").addEventListener("click", attachFromFtp);

    fileInput.addEventListener("change", () => {
      addFiles(fileInput.files);
      fileInput.value = "";
    });

    let dragDepth = 0;
    dialog.addEventListener("dragenter", (event) => {
      if (!event.dataTransfer || ![...event.dataTransfer.types].includes("Files")) return;
      event.preventDefault();
      dragDepth += 1;
      dropzone.hidden = false;
    });
    dialog.addEventListener("dragover", (event) => {
      if (!event.dataTransfer || ![...event.dataTransfer.types].includes("Files")) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    dialog.addEventListener("dragleave", () => {
      dragDepth = Math.max(0, dragDepth - 1);
      if (!dragDepth) dropzone.hidden = true;
    });
    dialog.addEventListener("drop", (event) => {
      event.preventDefault();
      dragDepth = 0;
      dropzone.hidden = true;
      if (event.dataTransfer && event.dataTransfer.files.length) addFiles(event.dataTransfer.files);
    });

    // Forward ---------------------------------------------------------------------------
    // Inline: the original quoted in the text, its attachments along (unless unticked).
    // As attachment: the whole original as one .eml part, the text left to the user.

    const forwardBox = $("compose-forward");
    const forwardMode = $("compose-forward-mode");
    const forwardInclude = $("compose-forward-include");

    function svgIcon(name) {
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("class", "icon");
      svg.setAttribute("aria-hidden", "true");
      const use = document.createElementNS("http://www.w3.org/2000/svg", "use");
      use.setAttribute("href", `#${name}`);
      svg.append(use);
      return svg;
    }

    function forwardChip(name, detail, excluded, iconName) {
      return el("li", { class: "compose-forward-file" + (excluded ? " excluded" : ""), title: name }, svgIcon(iconName), el("span", { class: "name", text: name }), el("span", { class: "muted", text: detail }));
    }

    function renderForward() {
      forwardBox.hidden = !forward.of;
      if (!forward.of) return;
      const original = forward.original || {};
      const attached = original.attachments || [];
      const inline = forward.mode === "inline";
      forwardMode.value = forward.mode;
      forwardInclude.checked = forward.include;
      $("compose-forward-include-row").hidden = !inline || !attached.length;
      $("compose-forward-include-text").textContent = attached.length === 1 ? "Include the original's attachment" : `Include the original's ${attached.length} attachments`;
      let chips;
      if (inline) {
        chips = attached.map((a) => forwardChip(a.filename || "attachment", `${formatSize(a.size || 0)} · from the original`, !forward.include, "i-clip"));
      } else {
        // Named as the server names the part: the subject, else "attachment".
        const name = `${(original.subject || "").trim() || "attachment"}.eml`;
        const along = attached.length === 1 ? ", with its attachment" : attached.length ? `, with its ${attached.length} attachments` : "";
        const size = original.size ? `${formatSize(original.size)} · ` : "";
        chips = [forwardChip(name, `${size}the original message${along}`, false, "i-mail")];
      }
      $("compose-forward-files").replaceChildren(...chips);
    }

    // The body as filled for this mode; kept to tell whether the user has written in it.
    function fillForwardBody() {
      editor.setContent({ text: forward.mode === "inline" && forward.original ? forwarded(forward.original) : "" });
      forward.filled = JSON.stringify(editor.value());
    }

    forwardMode.addEventListener("change", () => {
      forward.mode = forwardMode.value;
      // An untouched body follows the mode (Thunderbird: a forward as attachment starts empty).
      if (forward.filled === JSON.stringify(editor.value())) fillForwardBody();
      renderForward();
      markDirty();
    });
    forwardInclude.addEventListener("change", () => {
      forward.include = forwardInclude.checked;
      renderForward();
      markDirty();
    });

    function setForward(values) {
      forward.of = values.of || null;
      forward.original = values.original || null;
      forward.mode = values.mode || "inline";
      forward.include = values.include !== false;
      forward.filled = null;
      renderForward();
    }

    // The original of a resumed forward, for its attachments' chips (best effort).
    async function loadForwardOriginal() {
      if (!forward.of || forward.original) return;
      const of = forward.of;
      const original = await api(`mail/messages/${of}/`).catch(() => null);
      if (original && forward.of === of) {
        forward.original = original;
        renderForward();
      }
    }

    function originalFields() {
      return { reply_to_message: answering, forward_of: forward.of, forward_mode: forward.mode, forward_attachments: forward.include };
    }

    // Errors ----------------------------------------------------------------------------

    function clearError(name) {
      const node = dialog.querySelector(`[data-error-for="${name}"]`);
      if (node) {
        node.hidden = true;
        node.textContent = "";
      }
    }

    function clearErrors() {
      dialog.querySelectorAll("[data-error-for]").forEach((node) => {
        node.hidden = true;
        node.textContent = "";
      });
      dialog.querySelectorAll(".token.invalid").forEach((node) => {
        node.classList.remove("invalid");
        node.removeAttribute("aria-invalid");
      });
    }

    function showError(name, message) {
      const node = dialog.querySelector(`[data-error-for="${name}"]`) || dialog.querySelector('[data-error-for="detail"]');
      node.textContent = message;
      node.hidden = false;
    }

    function showApiError(error) {
      // 400s keep per-field messages under "errors" (webapp/api/errors.py), summed up in "detail".
      const body = Object.assign({}, (error.body && error.body.errors) || {});
      if (!body.detail && error.body && error.body.detail) body.detail = error.body.detail;
      if (Array.isArray(body.detail)) body.detail = body.detail.join(" ");
      let shown = false;
      if (body.addresses && typeof body.addresses === "object") {
        // Each bad address next to the field it was typed in.
        const perField = {};
        for (let [address, problem] of Object.entries(body.addresses)) {
          if (Array.isArray(problem)) problem = problem.join(" ");
          let where = "to";
          for (const name of ["to", "cc", "bcc"]) {
            const token = fields[name].tokens.find((t) => t.value === address || t.value.includes(address));
            if (token) {
              token.node.classList.add("invalid");
              token.node.setAttribute("aria-invalid", "true");
              where = name;
              break;
            }
          }
          (perField[where] = perField[where] || []).push(`${address}: ${problem}`);
        }
        for (const [name, lines] of Object.entries(perField)) {
          showError(name, lines.join("\n"));
          if (name !== "to") showCc(false);
        }
        shown = true;
      }
      for (const [key, value] of Object.entries(body)) {
        if (key === "detail" || key === "addresses" || key === "code") continue;
        showError(key, Array.isArray(value) ? value.join(" ") : typeof value === "object" ? JSON.stringify(value) : String(value));
        shown = true;
      }
      if (body.detail && (!shown || !body.addresses)) showError("detail", body.detail);
      else if (!shown) showError("detail", error.message);
    }

    // Drafts ----------------------------------------------------------------------------
    // Saved DRAFT_DELAY after the last change, when the dialog closes and when the page goes
    // away; one request at a time (a change made meanwhile is saved right after). The server
    // keeps one copy in the account's Drafts folder (mailcore/drafts.py).

    const savedStatus = $("compose-saved");
    const draftsToggle = $("compose-drafts-toggle");
    const draftsBox = $("compose-drafts");
    const draftsList = $("compose-drafts-list");

    function markDirty() {
      draft.changes += 1;
      clearTimeout(draft.timer);
      draft.timer = setTimeout(saveDraft, DRAFT_DELAY);
    }

    // What the dialog holds now is saved (or was just filled in, and is not worth saving yet).
    function settle() {
      clearTimeout(draft.timer);
      draft.saved = draft.changes;
    }

    function clockTime(iso) {
      const date = iso ? new Date(iso) : new Date();
      return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }

    function showSaved(text, failed) {
      savedStatus.textContent = text;
      savedStatus.classList.toggle("failed", Boolean(failed));
    }

    function draftPayload() {
      const from = fromValue();
      const body = editor.value();
      const values = (name) => fields[name].tokens.map((t) => t.value);
      return {
        account: from.account,
        identity: from.identity,
        to: values("to"),
        cc: values("cc"),
        bcc: values("bcc"),
        subject: subject.value,
        text: body.text,
        html: body.html || "",
        attachments: files.filter((f) => f.done).map((f) => f.id),
        in_reply_to: inReplyTo || "",
        ...originalFields(),
      };
    }

    async function saveNow() {
      const session = draft.session;
      if (draft.changes === draft.saved) return;
      if (!draft.id && isEmpty()) return settle();
      const upto = draft.changes;
      const payload = draftPayload();
      if (!payload.account) return;
      showSaved("Saving…");
      try {
        const saved = draft.id ? await api(`mail/drafts/${draft.id}/`, { method: "PUT", body: payload }) : await api("mail/drafts/", { method: "POST", body: payload });
        if (session !== draft.session) return; // the dialog moved on (sent, discarded, reset)
        draft.id = saved.id;
        draft.saved = Math.max(draft.saved, upto);
        showSaved(`Saved ${clockTime(saved.updated_at)}`);
      } catch (error) {
        if (session === draft.session) showSaved(`Not saved: ${error.message}`, true);
      }
    }

    function saveDraft() {
      clearTimeout(draft.timer);
      draft.chain = draft.chain.then(saveNow, saveNow);
      return draft.chain;
    }

    // The id of the draft once every save on its way has landed (null: there is none).
    async function draftId() {
      clearTimeout(draft.timer);
      await draft.chain;
      return draft.id;
    }

    function forgetDraft() {
      draft.session += 1;
      draft.id = null;
      settle();
      showSaved("");
    }

    window.addEventListener("pagehide", () => {
      if (!dialog.open || draft.changes === draft.saved || (!draft.id && isEmpty())) return;
      // The page is going away: a last save that outlives it (fetch keepalive).
      fetch(API + (draft.id ? `mail/drafts/${draft.id}/` : "mail/drafts/"), {
        method: draft.id ? "PUT" : "POST",
        keepalive: true,
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
        body: JSON.stringify(draftPayload()),
      });
    });

    async function addUploads(ids) {
      for (const id of ids) {
        let upload;
        try {
          upload = await api(`uploads/${id}/`);
        } catch (error) {
          continue; // removed since: the next save drops it from the draft
        }
        uploadDone(fileEntry(upload.filename, upload.size, () => {}), upload);
      }
    }

    async function addTokens(name, values) {
      await loadPeople();
      values.forEach((value) => {
        const group = groups.find((g) => g.name.toLowerCase() === value.toLowerCase());
        if (group) addToken(name, group.name, `${group.name} (${group.members.length})`, "group");
        else addToken(name, value);
      });
    }

    // Put a saved draft in the dialog.
    async function resumeDraft(id) {
      let saved;
      try {
        saved = await api(`mail/drafts/${id}/`);
      } catch (error) {
        toast(`Could not open the draft: ${error.message}`, "failed");
        return;
      }
      if (draft.changes !== draft.saved) await saveDraft();
      await loadIdentities();
      reset();
      fillFrom(saved.account);
      if (saved.identity) fromSelect.value = `i:${saved.identity}:${saved.account}`;
      for (const name of ["to", "cc", "bcc"]) await addTokens(name, saved[name] || []);
      if ((saved.cc || []).length || (saved.bcc || []).length) showCc(false);
      subject.value = saved.subject || "";
      editor.setContent({ html: saved.html, text: saved.text });
      inReplyTo = saved.in_reply_to || null;
      answering = saved.reply_to_message || null;
      setForward({ of: saved.forward_of, mode: saved.forward_mode, include: saved.forward_attachments });
      $("compose-title").textContent = "Draft";
      show();
      await Promise.all([addUploads(saved.attachments || []), loadForwardOriginal()]);
      draft.id = saved.id;
      settle();
      showSaved(`Saved ${clockTime(saved.updated_at)}`);
      editor.focus();
    }

    // A draft in the Drafts folder: ours if we saved it (same Message-ID), else its contents.
    async function resumeMessage(messageId) {
      let message;
      try {
        message = await api(`mail/messages/${messageId}/`);
      } catch (error) {
        toast(`Could not open the draft: ${error.message}`, "failed");
        return;
      }
      const found = message.message_id ? results(await api(`mail/drafts/?message_id=${encodeURIComponent(message.message_id)}`).catch(() => [])) : [];
      if (found.length) return resumeDraft(found[0].id);
      await loadIdentities();
      reset();
      fillFrom(message.account);
      await addTokens("to", (message.to || []).map(mailbox));
      await addTokens("cc", (message.cc || []).map(mailbox));
      if ((message.cc || []).length) showCc(false);
      subject.value = message.subject || "";
      editor.setContent({ html: message.html, text: message.text });
      $("compose-title").textContent = "Draft";
      show();
      markDirty(); // saved as one of ours from now on
      editor.focus();
    }

    function closeDraftsList() {
      draftsBox.hidden = true;
      draftsToggle.setAttribute("aria-expanded", "false");
    }

    async function showDraftsList() {
      let list = [];
      try {
        list = results(await api("mail/drafts/?page_size=20"));
      } catch (error) {
        toast(`Could not list the drafts: ${error.message}`, "failed");
        return;
      }
      const items = list.map((saved) => {
        const who = [...saved.to, ...saved.cc, ...saved.bcc].join(", ") || "No recipients";
        const current = saved.id === draft.id;
        return el(
          "li",
          {},
          el(
            "button",
            { type: "button", class: "compose-draft-item" + (current ? " current" : ""), "data-draft": String(saved.id), "aria-current": current ? "true" : false },
            el("span", { class: "compose-draft-subject", text: saved.subject || "(no subject)" }),
            el("span", { class: "compose-draft-detail muted", text: `${who} · ${new Date(saved.updated_at).toLocaleString([], { dateStyle: "medium", timeStyle: "short" })}` })
          )
        );
      });
      draftsList.replaceChildren(...(items.length ? items : [el("li", { class: "muted compose-drafts-empty", text: "No saved drafts." })]));
      draftsBox.hidden = false;
      draftsToggle.setAttribute("aria-expanded", "true");
      const first = draftsList.querySelector("button");
      if (first) first.focus();
    }

    draftsToggle.addEventListener("click", () => (draftsBox.hidden ? showDraftsList() : closeDraftsList()));
    draftsList.addEventListener("click", (event) => {
      const item = event.target.closest("[data-draft]");
      if (!item) return;
      closeDraftsList();
      if (Number(item.dataset.draft) !== draft.id) resumeDraft(Number(item.dataset.draft));
    });
    dialog.addEventListener("click", (event) => {
      if (!draftsBox.hidden && !event.target.closest(".compose-drafts-wrap")) closeDraftsList();
    });
    subject.addEventListener("input", markDirty);
    fromSelect.addEventListener("change", markDirty);
    dialog.addEventListener("close", () => {
      if (draft.changes !== draft.saved) saveDraft();
    });

    // Open / reset ----------------------------------------------------------------------

    function reset() {
      Object.keys(fields).forEach((name) => {
        fields[name].tokens.slice().forEach((token) => removeToken(name, token));
        fields[name].input.value = "";
      });
      dialog.querySelectorAll('[data-field="cc"], [data-field="bcc"]').forEach((row) => (row.hidden = true));
      $("compose-show-cc").hidden = false;
      subject.value = "";
      editor.clear();
      files.forEach((entry) => entry.done || entry.abort());
      files = [];
      filesList.replaceChildren();
      inReplyTo = null;
      answering = null;
      setForward({});
      later.hidden = true;
      laterToggle.setAttribute("aria-expanded", "false");
      sendAt.value = "";
      clearErrors();
      closeSuggest();
      closeDraftsList();
      forgetDraft();
    }

    function isEmpty() {
      return !Object.values(fields).some((f) => f.tokens.length || f.input.value.trim()) && !subject.value && editor.isEmpty() && !files.length;
    }

    function show() {
      if (!dialog.open) dialog.showModal();
    }

    const selfAddresses = () => new Set([...accounts.map((a) => a.email_address), ...identities.map((i) => i.email_address)].map((a) => (a || "").toLowerCase()));

    async function open(detail) {
      const action = (detail && detail.action) || "new";
      await loadIdentities();
      if (action === "new" && dialog.open) return fields.to.input.focus();
      if (action === "draft") return detail.draft ? resumeDraft(detail.draft) : resumeMessage(detail.id);
      if (draft.changes !== draft.saved) await saveDraft(); // what was there stays a draft
      if (action !== "new" || !isEmpty()) reset();
      fillFrom(detail && detail.account);
      $("compose-title").textContent = { new: "New message", reply: "Reply", replyAll: "Reply all", forward: "Forward" }[action] || "New message";
      show();
      loadPeople();
      if (action === "new" || !detail.id) {
        fields.to.input.focus();
        return;
      }
      let message;
      try {
        message = await api(`mail/messages/${detail.id}/`);
      } catch (error) {
        showError("detail", `Could not load the message: ${error.message}`);
        return;
      }
      const mine = selfAddresses();
      // Answer as the address the message was sent to, when it is one of ours.
      const addressedTo = [...(message.to || []), ...(message.cc || [])].map((p) => (p.email || "").toLowerCase());
      const identity = identities.find((i) => addressedTo.includes((i.email_address || "").toLowerCase()));
      if (identity) fromSelect.value = `i:${identity.id}:${identity.account}`;
      if (action === "forward") {
        subject.value = prefixed("Fwd", message.subject);
        setForward({ of: message.id, original: message });
        fillForwardBody();
        fields.to.input.focus();
      } else {
        subject.value = prefixed("Re", message.subject);
        editor.setContent({ text: quote(message) });
        inReplyTo = message.message_id || null;
        answering = message.id;
        const replyTo = header(message, "reply-to");
        if (replyTo) addToken("to", replyTo);
        else addToken("to", mailbox(message.sender));
        if (action === "replyAll") {
          const seen = new Set([...fields.to.tokens.map((t) => t.value.toLowerCase()), ...mine]);
          const extra = (people) => (people || []).filter((p) => p.email && !seen.has(p.email.toLowerCase()) && !fields.to.tokens.some((t) => t.value.toLowerCase().includes(p.email.toLowerCase())));
          extra(message.to).forEach((p) => addToken("to", mailbox(p)));
          const cc = extra(message.cc);
          if (cc.length) {
            showCc(false);
            cc.forEach((p) => addToken("cc", mailbox(p)));
          }
        }
        editor.focus(true);
      }
      settle(); // a reply nobody has typed in yet is not a draft
    }

    // Sending ---------------------------------------------------------------------------

    let queuedSend = null;

    function maybeSendQueued() {
      if (queuedSend && !files.some((f) => !f.done && !f.failed)) {
        const options = queuedSend;
        queuedSend = null;
        send(options);
      }
    }

    async function send({ scheduled } = {}) {
      if (sending) return;
      Object.keys(fields).forEach(commitTyped);
      closeSuggest();
      clearErrors();
      const values = (name) => fields[name].tokens.map((t) => t.value);
      if (!values("to").length && !values("cc").length && !values("bcc").length) {
        showError("to", "Add at least one recipient.");
        fields.to.input.focus();
        return;
      }
      if (files.some((f) => f.failed)) {
        showError("attachments", "An attachment failed to upload: remove it or attach it again.");
        return;
      }
      if (files.some((f) => !f.done)) {
        queuedSend = { scheduled };
        $("compose-send").textContent = "Sending after uploads…";
        return;
      }
      const from = fromValue();
      const payload = {
        account: from.account,
        identity: from.identity,
        to: values("to"),
        cc: values("cc"),
        bcc: values("bcc"),
        subject: subject.value,
        ...editor.value(),
        attachments: files.map((f) => f.id),
        in_reply_to: inReplyTo,
        ...originalFields(),
      };
      if (scheduled) {
        if (!sendAt.value) {
          showError("send_at", "Pick a date and time.");
          sendAt.focus();
          return;
        }
        payload.send_at = new Date(sendAt.value).toISOString();
      }
      sending = true;
      form.classList.add("busy");
      $("compose-send").disabled = true;
      let message;
      try {
        // Sending a saved draft deletes it and its server copy, in the same transaction.
        const id = await draftId();
        message = await api(id ? `mail/drafts/${id}/send/` : "mail/outbox/", { method: "POST", body: payload });
      } catch (error) {
        showApiError(error);
        return;
      } finally {
        sending = false;
        form.classList.remove("busy");
        $("compose-send").disabled = false;
        $("compose-send").textContent = "Send";
      }
      const copy = snapshot();
      reset();
      dialog.close();
      undoToast(message, copy, scheduled ? `Scheduled for ${formatWhen(message.send_at || payload.send_at)}.` : "Sending…");
    }

    function snapshot() {
      return {
        from: fromSelect.value,
        to: fields.to.tokens.map((t) => [t.value, t.node.textContent.replace(/×$/, "")]),
        cc: fields.cc.tokens.map((t) => [t.value, t.node.textContent.replace(/×$/, "")]),
        bcc: fields.bcc.tokens.map((t) => [t.value, t.node.textContent.replace(/×$/, "")]),
        subject: subject.value,
        body: editor.value(),
        inReplyTo,
        answering,
        forward: { ...forward },
        title: $("compose-title").textContent,
      };
    }

    function restore(copy) {
      reset();
      fromSelect.value = copy.from;
      for (const name of ["to", "cc", "bcc"]) copy[name].forEach(([value, label]) => addToken(name, value, label));
      if (copy.cc.length || copy.bcc.length) showCc(false);
      subject.value = copy.subject;
      editor.setContent(copy.body);
      inReplyTo = copy.inReplyTo;
      answering = copy.answering;
      setForward(copy.forward);
      $("compose-title").textContent = copy.title;
      show();
      editor.focus();
      markDirty(); // a draft again, until it is sent
    }

    function undoToast(message, copy, label) {
      const box = $("toasts");
      if (!box) return;
      const undo = el("button", { type: "button", class: "link toast-undo", text: "Undo" });
      const item = el("div", { class: "toast compose-toast", role: "status" }, el("span", { text: label + " " }), undo);
      box.append(item);
      const scheduled = message.state === "scheduled" && message.send_at;
      const timer = setTimeout(() => item.remove(), (scheduled ? 15 : UNDO_SECONDS) * 1000);
      undo.addEventListener("click", async () => {
        clearTimeout(timer);
        undo.disabled = true;
        try {
          await api(`mail/outbox/${message.id}/cancel/`, { method: "POST" });
        } catch (error) {
          item.remove();
          toast(error.status === 409 ? "Too late to undo: the message is already on its way." : `Could not cancel: ${error.message}`, "failed");
          return;
        }
        item.remove();
        toast("Sending cancelled: the message is back in the editor.");
        restore(copy);
      });
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      send();
    });
    $("compose-schedule").addEventListener("click", () => send({ scheduled: true }));
    laterToggle.addEventListener("click", () => {
      later.hidden = !later.hidden;
      laterToggle.setAttribute("aria-expanded", String(!later.hidden));
      if (!later.hidden) {
        if (!sendAt.value) {
          const soon = new Date(Date.now() + 60 * 60 * 1000);
          soon.setMinutes(0, 0, 0);
          sendAt.value = new Date(soon.getTime() - soon.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
        }
        sendAt.focus();
      }
    });
    dialog.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        send();
      }
    });
    $("compose-close").addEventListener("click", () => dialog.close());
    $("compose-discard").addEventListener("click", async () => {
      const id = await draftId();
      files.forEach((entry) => entry.done && api(`uploads/${entry.id}/`, { method: "DELETE" }).catch(() => {}));
      reset();
      dialog.close();
      if (id) api(`mail/drafts/${id}/`, { method: "DELETE" }).catch((error) => toast(`The draft could not be deleted: ${error.message}`, "failed"));
    });
    dialog.addEventListener("cancel", (event) => {
      // Esc closes the suggestions (or the drafts list) first.
      if (!suggest.hidden) {
        event.preventDefault();
        closeSuggest();
      } else if (!draftsBox.hidden) {
        event.preventDefault();
        closeDraftsList();
        draftsToggle.focus();
      }
    });

    document.addEventListener("satchel:compose", (event) => open(event.detail || {}));
    const button = $("compose-button");
    if (button) button.addEventListener("click", () => open({ action: "new", account: currentAccount() }));

    function currentAccount() {
      const params = new URLSearchParams(location.search);
      return Number(params.get("account")) || null;
    }

    // /mail/?draft=<id> opens that draft (links from elsewhere, e.g. the outbox page).
    const linked = Number(new URLSearchParams(location.search).get("draft"));
    if (linked) resumeDraft(linked);
  }

  // -------------------------------------------------------------------------------------
  // The outbox page
  // -------------------------------------------------------------------------------------

  function setupOutbox(page) {
    const tbody = $("outbox-rows");

    function cell(row, name) {
      return row.querySelector(`[data-field="${name}"]`);
    }

    function apply(row, message) {
      const state = cell(row, "state");
      state.textContent = message.state;
      state.className = `state outbox-state ${message.state}`;
      if (message.attempts !== undefined) cell(row, "attempts").textContent = String(message.attempts);
      const next = cell(row, "next_attempt_at");
      next.replaceChildren();
      if (CANCELLABLE.has(message.state) && message.next_attempt_at) {
        next.append(el("time", { datetime: message.next_attempt_at, text: formatWhen(message.next_attempt_at) }));
      }
      if (message.last_error !== undefined) cell(row, "last_error").textContent = message.last_error || "";
      const actions = row.lastElementChild;
      actions.replaceChildren();
      if (CANCELLABLE.has(message.state)) {
        actions.append(el("button", { type: "button", class: "outbox-cancel", "data-cancel": String(message.id), text: "Cancel" }));
      }
    }

    function build(message) {
      const row = el(
        "tr",
        { "data-outbox-id": String(message.id) },
        el("td", { "data-field": "subject", text: message.subject || "(no subject)" }),
        el("td", { "data-field": "to", text: [...(message.to || []), ...(message.cc || []), ...(message.bcc || [])].map((p) => (typeof p === "string" ? p : p.email || p.name)).join(", ") }),
        el("td", {}, el("span", { class: "state outbox-state", "data-field": "state" })),
        el("td", { "data-field": "attempts" }),
        el("td", { "data-field": "next_attempt_at" }),
        el("td", { "data-field": "last_error", class: "outbox-error" }),
        el("td")
      );
      apply(row, message);
      return row;
    }

    // The server renders times in its zone; show them in the browser's.
    tbody.querySelectorAll("time[datetime]").forEach((node) => (node.textContent = formatWhen(node.getAttribute("datetime"))));

    document.addEventListener("satchel:outbox.state", async (event) => {
      const message = event.detail && event.detail.message;
      if (!message) return;
      let row = tbody.querySelector(`tr[data-outbox-id="${message.id}"]`);
      if (!row) {
        let full = message;
        try {
          full = await api(`mail/outbox/${message.id}/`);
        } catch (error) {
          return;
        }
        row = tbody.querySelector(`tr[data-outbox-id="${message.id}"]`) || build(full);
        tbody.prepend(row);
        $("outbox-empty").hidden = true;
      }
      apply(row, message);
    });

    tbody.addEventListener("click", async (event) => {
      const button = event.target.closest("[data-cancel]");
      if (!button) return;
      button.disabled = true;
      try {
        const message = await api(`mail/outbox/${button.dataset.cancel}/cancel/`, { method: "POST" });
        apply(button.closest("tr"), message);
        toast("Cancelled: it will not be sent.");
      } catch (error) {
        button.disabled = false;
        toast(error.status === 409 ? "Too late to cancel: the message is already being sent." : error.message, "failed");
      }
    });
    showDrafts(page);
  }

  // The outbox page lists the saved drafts too, each a link that resumes it on the mail page.
  async function showDrafts(page) {
    let list = [];
    try {
      list = results(await api("mail/drafts/?page_size=50"));
    } catch (error) {
      return;
    }
    if (!list.length) return;
    const back = page.querySelector(".outbox-head a[href]");
    const mailUrl = back ? back.getAttribute("href") : "/mail/";
    const items = list.map((saved) =>
      el(
        "li",
        { class: "outbox-draft" },
        el("a", { href: `${mailUrl}?draft=${saved.id}`, text: saved.subject || "(no subject)" }),
        el("span", { class: "muted", text: ` · ${[...saved.to, ...saved.cc, ...saved.bcc].join(", ") || "no recipients yet"} · saved ${formatWhen(saved.updated_at)}` })
      )
    );
    const card = el("section", { class: "card outbox-drafts", id: "outbox-drafts", "aria-labelledby": "outbox-drafts-title" }, el("h2", { id: "outbox-drafts-title", text: "Drafts" }), el("ul", {}, ...items));
    page.querySelector(".outbox-card").before(card);
  }

  function start() {
    const dialog = $("compose-dialog");
    if (dialog) setupCompose(dialog);
    const outbox = $("outbox-page");
    if (outbox) setupOutbox(outbox);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
