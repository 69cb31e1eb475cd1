// Satchel mail: the account form's helpers, and the three-pane reader — folder tree, a
// windowed message list (only the rows in view are in the DOM), and a reading pane whose
// body is a sandboxed <iframe> loaded from the server (message HTML never enters this page).
// Everything talks to the REST API (/api/v1/mail/) and listens to the live events that
// events.js re-dispatches on `document` (satchel:mail.new, satchel:mailbox.counts, …).
(function () {
  "use strict";

  const { el, formatSize } = window.Satchel;

  // ---------------------------------------------------------------------------------------
  // Account form: ports follow the security choice, POP3-only options, helpful placeholders.
  // ---------------------------------------------------------------------------------------

  function setupAccountForm(form) {
    const portsScript = document.getElementById("mail-ports");
    const ports = portsScript ? JSON.parse(portsScript.textContent) : { incoming: {}, smtp: {} };
    const field = (name) => form.elements.namedItem(name);
    const protocol = field("incoming_protocol");
    const security = field("incoming_security");
    const port = field("incoming_port");
    const smtpSecurity = field("smtp_security");
    const smtpPort = field("smtp_port");
    const incomingDefaults = new Set(Object.values(ports.incoming).map(String));
    const smtpDefaults = new Set(Object.values(ports.smtp).map(String));

    function followIncoming() {
      const wanted = ports.incoming[`${protocol.value}:${security.value}`];
      if (wanted && (!port.value || incomingDefaults.has(port.value))) port.value = wanted;
    }
    function followSmtp() {
      const wanted = ports.smtp[smtpSecurity.value];
      if (wanted && (!smtpPort.value || smtpDefaults.has(smtpPort.value))) smtpPort.value = wanted;
    }
    protocol.addEventListener("change", followIncoming);
    security.addEventListener("change", followIncoming);
    smtpSecurity.addEventListener("change", followSmtp);

    const pop3Only = form.querySelector(".pop3-only");
    const showPop3 = () => {
      if (pop3Only) pop3Only.hidden = protocol.value !== "pop3";
    };
    protocol.addEventListener("change", showPop3);
    showPop3();

    const email = field("email_address");
    const host = field("incoming_host");
    const smtpHost = field("smtp_host");
    const username = field("username");
    const adding = form.dataset.adding === "true";
    username.addEventListener("input", () => (username.dataset.touched = "1"));
    const suggest = () => {
      const domain = (email.value.split("@")[1] || "").trim();
      if (domain) {
        host.placeholder = `${protocol.value === "pop3" ? "pop" : "imap"}.${domain}`;
        smtpHost.placeholder = `smtp.${domain}`;
      }
      if (adding && !username.dataset.touched) username.value = email.value.trim();
    };
    email.addEventListener("input", suggest);
    protocol.addEventListener("change", suggest);
  }

  const accountForm = document.getElementById("account-form");
  if (accountForm) setupAccountForm(accountForm);

  const app = document.getElementById("mail-app");
  if (!app) return;

  // ---------------------------------------------------------------------------------------
  // Helpers
  // ---------------------------------------------------------------------------------------

  const API = "/api/v1/";
  const PAGE_SIZE = 100;
  const OVERSCAN = 12; // rows rendered above and below the visible ones
  const LOAD_AHEAD = 40; // fetch the next page when this close to the end of what is loaded
  const ROLE_ORDER = { inbox: 0, drafts: 1, sent: 2, archive: 3, junk: 4, trash: 5 };
  const ROLE_ICONS = {
    inbox: "i-inbox",
    sent: "i-sent",
    drafts: "i-drafts",
    trash: "i-trash",
    junk: "i-junk",
    archive: "i-archive",
  };
  const narrowQuery = window.matchMedia("(max-width: 699px)");
  const drawerQuery = window.matchMedia("(max-width: 1099px)");

  const $ = (id) => document.getElementById(id);
  function toast(text, variant) {
    if (window.Satchel && window.Satchel.toast) window.Satchel.toast(text, variant);
  }

  // The shared client (static/js/api.js); paths are relative to the API root.
  function api(path, options) {
    return window.Satchel.api(/^(https?:)?\//.test(path) ? path : API + path, options);
  }

  async function apiAll(path) {
    const results = [];
    let url = path;
    while (url) {
      const page = await api(url);
      results.push(...page.results);
      url = page.next;
    }
    return results;
  }

  function icon(name, extra) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "icon" + (extra ? " " + extra : ""));
    svg.setAttribute("aria-hidden", "true");
    const use = document.createElementNS("http://www.w3.org/2000/svg", "use");
    use.setAttribute("href", "#" + name);
    svg.append(use);
    return svg;
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
  const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
  const yearFormat = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric" });
  const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });
  const headerFormat = new Intl.DateTimeFormat(undefined, {
    weekday: "short",
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "numeric",
    minute: "2-digit",
  });

  // Today: the time; this year: the day; older: the date with its year.
  function shortDate(iso) {
    const date = new Date(iso);
    const now = new Date();
    if (date.toDateString() === now.toDateString()) return timeFormat.format(date);
    if (date.getFullYear() === now.getFullYear()) return dayFormat.format(date);
    return yearFormat.format(date);
  }

  function plural(count, one, many) {
    return `${count.toLocaleString()} ${count === 1 ? one : many || one + "s"}`;
  }

  function personName(address) {
    if (!address) return "";
    return address.name || address.email || "";
  }

  function personFull(address) {
    if (!address) return "";
    return address.name && address.email ? `${address.name} <${address.email}>` : address.name || address.email;
  }

  function hue(text) {
    let hash = 0;
    for (const char of text || "?") hash = (hash * 31 + char.codePointAt(0)) | 0;
    return Math.abs(hash) % 360;
  }

  function avatar(address) {
    const label = personName(address) || "?";
    const letter = (label.match(/[\p{L}\p{N}]/u) || ["?"])[0].toUpperCase();
    const node = el("span", { class: "avatar", "aria-hidden": "true", text: letter });
    node.style.setProperty("--hue", hue((address && address.email) || label));
    return node;
  }

  function isTyping(target) {
    if (!target || !target.closest) return false;
    if (target.isContentEditable) return true;
    const field = target.closest("input, textarea, select");
    if (!field) return false;
    if (field.tagName !== "INPUT") return true;
    return !["checkbox", "radio", "button", "submit", "reset", "range", "color"].includes(field.type);
  }

  // ---------------------------------------------------------------------------------------
  // State
  // ---------------------------------------------------------------------------------------

  const start = JSON.parse($("mail-start").textContent);
  const state = {
    accounts: JSON.parse($("mail-accounts-data").textContent),
    mailboxes: new Map(), // id -> mailbox
    mailboxesLoaded: new Set(), // account ids whose folders were fetched
    mailboxId: null,
    accountId: null,
    q: "",
    filters: { unread: false, flagged: false, has_attachments: false, since: "", before: "", everywhere: false, server: false },
    threads: localStorage.getItem("satchel.mail.threads") === "1",
    messages: new Map(), // id -> message (one object per id, shared by list and reader)
    items: [], // loaded list, newest first
    rows: [], // what the list shows: items, or items grouped by thread
    rowIndex: new Map(), // row key -> index
    next: null,
    loading: false,
    loadError: "",
    listToken: 0,
    cursorKey: null,
    openKey: null,
    selected: new Set(), // message ids
    anchorKey: null,
    syncJobs: new Map(), // job id -> account id, for syncs started here
    accountJobs: new Map(), // account id -> latest job state
    collapsed: new Set(JSON.parse(localStorage.getItem("satchel.mail.collapsed") || "[]")),
  };
  if (start.job && start.account) state.syncJobs.set(start.job, start.account);

  const tree = $("folder-tree");
  const viewport = $("list-viewport");
  const spacer = $("list-spacer");
  const listEmpty = $("list-empty");
  const searchInput = $("search");
  const filtersBox = $("filters");
  const reader = {
    token: 0,
    rowKey: null,
    messages: [], // the open message, or the open conversation oldest first
    expanded: null, // id of the message shown in full
    detail: null,
    images: false,
  };

  let rowHeight = 76;
  const rendered = new Map(); // row key -> element

  function account(id) {
    return state.accounts.find((a) => a.id === id) || null;
  }

  function mailboxesOf(accountId) {
    return [...state.mailboxes.values()].filter((m) => m.account === accountId);
  }

  function roleMailbox(accountId, role) {
    return mailboxesOf(accountId).find((m) => m.role === role) || null;
  }

  // The inbox is "Inbox" whatever the server calls it (INBOX, Posteingang…).
  function folderLabel(mailbox) {
    return mailbox.role === "inbox" ? "Inbox" : mailbox.name;
  }

  function currentMailbox() {
    return state.mailboxes.get(state.mailboxId) || null;
  }

  function remember(message) {
    const known = state.messages.get(message.id);
    if (known) return Object.assign(known, message);
    state.messages.set(message.id, message);
    return message;
  }

  function searching() {
    const f = state.filters;
    return Boolean(state.q || f.unread || f.flagged || f.has_attachments || f.since || f.before || f.everywhere);
  }

  // ---------------------------------------------------------------------------------------
  // Folder tree
  // ---------------------------------------------------------------------------------------

  function sortMailboxes(list) {
    return list.sort((a, b) => {
      const ra = a.role in ROLE_ORDER ? ROLE_ORDER[a.role] : 9;
      const rb = b.role in ROLE_ORDER ? ROLE_ORDER[b.role] : 9;
      if (ra !== rb) return ra - rb;
      return a.name.localeCompare(b.name, undefined, { sensitivity: "base", numeric: true });
    });
  }

  function childrenOf(accountId, parentId) {
    return sortMailboxes(mailboxesOf(accountId).filter((m) => (m.parent || null) === parentId));
  }

  async function loadMailboxes(accountId) {
    const list = await apiAll(`mail/mailboxes/?account=${accountId}&page_size=500`);
    for (const [id, mailbox] of state.mailboxes) if (mailbox.account === accountId) state.mailboxes.delete(id);
    for (const mailbox of list) state.mailboxes.set(mailbox.id, mailbox);
    state.mailboxesLoaded.add(accountId);
    renderTree();
  }

  const reloadTimers = new Map();
  function reloadMailboxesSoon(accountId) {
    clearTimeout(reloadTimers.get(accountId));
    reloadTimers.set(
      accountId,
      setTimeout(async () => {
        await loadMailboxes(accountId).catch(() => {});
        if (!state.mailboxId) chooseStartMailbox();
      }, 400)
    );
  }

  function folderRow(mailbox, depth) {
    const children = childrenOf(mailbox.account, mailbox.id);
    const collapsed = state.collapsed.has(mailbox.id);
    const current = mailbox.id === state.mailboxId;
    const link = el(
      "a",
      {
        class: "folder" + (mailbox.unread ? " has-unread" : ""),
        href: `?mailbox=${mailbox.id}`,
        "aria-current": current ? "page" : false,
        dataset: { mailbox: mailbox.id },
        title: mailbox.path,
      },
      icon(ROLE_ICONS[mailbox.role] || "i-folder"),
      el("span", { class: "folder-name", text: folderLabel(mailbox) }),
      el("span", { class: "folder-count", "aria-hidden": "true", text: mailbox.unread ? mailbox.unread.toLocaleString() : "" }),
      el("span", { class: "sr-only folder-unread", text: mailbox.unread ? `, ${mailbox.unread} unread` : "" })
    );
    const twisty = children.length
      ? el(
          "button",
          {
            type: "button",
            class: "twisty",
            "aria-expanded": String(!collapsed),
            "aria-label": `${collapsed ? "Expand" : "Collapse"} ${folderLabel(mailbox)}`,
            dataset: { toggle: mailbox.id },
          },
          icon("i-chevron")
        )
      : el("span", { class: "twisty-space" });
    const menu = el(
      "button",
      {
        type: "button",
        class: "icon-button folder-menu",
        "aria-label": `Actions for ${folderLabel(mailbox)}`,
        "aria-haspopup": "menu",
        dataset: { folderMenu: mailbox.id },
      },
      icon("i-more")
    );
    const row = el("div", { class: "folder-row" + (current ? " current" : "") }, twisty, link, menu);
    row.style.setProperty("--depth", depth);
    const item = el("li", { dataset: { mailboxItem: mailbox.id } }, row);
    if (children.length && !collapsed) {
      item.append(el("ul", { class: "folder-list" }, children.map((child) => folderRow(child, depth + 1))));
    }
    return item;
  }

  function accountProgress(accountId) {
    const job = state.accountJobs.get(accountId);
    if (!job || ["done", "failed", "cancelled"].includes(job.state)) return null;
    const percent = job.total ? Math.round((100 * job.done) / job.total) : 0;
    const bar = el("span");
    bar.style.width = percent + "%";
    return el(
      "div",
      { class: "account-sync", dataset: { jobId: job.id } },
      el(
        "div",
        {
          class: "progress",
          role: "progressbar",
          "aria-valuemin": "0",
          "aria-valuemax": "100",
          "aria-valuenow": String(percent),
          "aria-label": "Sync progress",
        },
        bar
      ),
      el("small", { class: "muted", dataset: { field: "count" }, text: `${job.done} / ${job.total ?? "?"} ${job.unit || ""}` })
    );
  }

  function renderTree() {
    const groups = state.accounts.map((acc) => {
      const syncing = acc.sync_state === "syncing" || [...state.syncJobs.values()].includes(acc.id);
      const head = el(
        "div",
        { class: "account-row" },
        el(
          "div",
          { class: "account-label", title: acc.email_address },
          el("span", { class: "account-name", text: acc.name }),
          syncing ? el("span", { class: "spinner", role: "status", "aria-label": "Syncing" }) : null,
          acc.sync_state === "error" ? el("span", { class: "account-error", title: acc.last_error }, icon("i-alert")) : null
        ),
        el(
          "button",
          {
            type: "button",
            class: "icon-button account-menu",
            "aria-label": `Actions for ${acc.name}`,
            "aria-haspopup": "menu",
            dataset: { accountMenu: acc.id },
          },
          icon("i-more")
        )
      );
      const top = childrenOf(acc.id, null);
      let body;
      if (top.length) {
        body = el("ul", { class: "folder-list" }, top.map((m) => folderRow(m, 0)));
      } else if (!state.mailboxesLoaded.has(acc.id)) {
        body = el("p", { class: "folder-note muted", text: "Loading folders…" });
      } else if (syncing) {
        body = el("p", { class: "folder-note muted", text: "Fetching folders from the server…" });
      } else {
        body = el(
          "p",
          { class: "folder-note muted" },
          "No folders yet. ",
          el("button", { type: "button", class: "link", dataset: { syncAccount: acc.id }, text: "Sync now" })
        );
      }
      return el("section", { class: "account-group", dataset: { account: acc.id }, "aria-label": acc.name }, head, accountProgress(acc.id), body);
    });
    tree.replaceChildren(...groups);
  }

  function updateFolderCounts(mailbox) {
    const item = tree.querySelector(`[data-mailbox-item="${mailbox.id}"] > .folder-row`);
    if (!item) return renderTree();
    const link = item.querySelector(".folder");
    link.classList.toggle("has-unread", mailbox.unread > 0);
    item.querySelector(".folder-count").textContent = mailbox.unread ? mailbox.unread.toLocaleString() : "";
    item.querySelector(".folder-unread").textContent = mailbox.unread ? `, ${mailbox.unread} unread` : "";
  }

  tree.addEventListener("click", (event) => {
    const target = event.target.closest("a, button");
    if (!target) return;
    if (target.dataset.mailbox) {
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button) return;
      event.preventDefault();
      selectMailbox(Number(target.dataset.mailbox));
    } else if (target.dataset.toggle) {
      const id = Number(target.dataset.toggle);
      if (state.collapsed.has(id)) state.collapsed.delete(id);
      else state.collapsed.add(id);
      localStorage.setItem("satchel.mail.collapsed", JSON.stringify([...state.collapsed]));
      renderTree();
    } else if (target.dataset.folderMenu) {
      folderMenu(target, state.mailboxes.get(Number(target.dataset.folderMenu)));
    } else if (target.dataset.accountMenu) {
      accountMenu(target, account(Number(target.dataset.accountMenu)));
    } else if (target.dataset.syncAccount) {
      startSync(Number(target.dataset.syncAccount));
    }
  });

  // ---------------------------------------------------------------------------------------
  // Menus and dialogs
  // ---------------------------------------------------------------------------------------

  let openMenuEl = null;

  function closeMenu() {
    if (!openMenuEl) return false;
    const { menu, anchor } = openMenuEl;
    menu.remove();
    anchor.setAttribute("aria-expanded", "false");
    openMenuEl = null;
    return true;
  }

  function showMenu(anchor, items) {
    closeMenu();
    const menu = el(
      "div",
      { class: "menu", role: "menu" },
      items.map((item) =>
        el("button", {
          type: "button",
          role: "menuitem",
          class: item.danger ? "danger" : "",
          disabled: item.disabled || false,
          text: item.label,
          onclick: () => {
            closeMenu();
            item.action();
          },
        })
      )
    );
    document.body.append(menu);
    const box = anchor.getBoundingClientRect();
    const width = menu.offsetWidth;
    menu.style.top = `${Math.min(box.bottom + 4, window.innerHeight - menu.offsetHeight - 8)}px`;
    menu.style.left = `${Math.max(8, Math.min(box.right - width, window.innerWidth - width - 8))}px`;
    anchor.setAttribute("aria-expanded", "true");
    openMenuEl = { menu, anchor };
    const first = menu.querySelector("button:not([disabled])");
    if (first) first.focus();
    menu.addEventListener("keydown", (event) => {
      const buttons = [...menu.querySelectorAll("button:not([disabled])")];
      const index = buttons.indexOf(document.activeElement);
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        const step = event.key === "ArrowDown" ? 1 : -1;
        buttons[(index + step + buttons.length) % buttons.length].focus();
      } else if (event.key === "Escape" || event.key === "Tab") {
        event.preventDefault();
        closeMenu();
        anchor.focus();
      }
    });
  }

  document.addEventListener("pointerdown", (event) => {
    if (openMenuEl && !openMenuEl.menu.contains(event.target) && !openMenuEl.anchor.contains(event.target)) closeMenu();
  });

  const promptDialog = $("prompt-dialog");

  // A small modal form: a name (optionally with a parent folder), or just a confirmation.
  function ask({ title, text = "", label = null, value = "", ok = "OK", danger = false, parents = null }) {
    $("prompt-title").textContent = title;
    $("prompt-text").textContent = text;
    $("prompt-text").hidden = !text;
    const input = $("prompt-input");
    $("prompt-field").hidden = label === null;
    input.required = label !== null;
    input.value = value;
    $("prompt-label").textContent = label || "";
    const parentField = $("prompt-parent-field");
    const parentSelect = $("prompt-parent");
    parentField.hidden = !parents;
    if (parents) {
      parentSelect.replaceChildren(
        ...parents.options.map(([id, name]) => el("option", { value: id === null ? "" : id, text: name }))
      );
      parentSelect.value = parents.value === null ? "" : parents.value;
    }
    const okButton = $("prompt-ok");
    okButton.textContent = ok;
    okButton.className = danger ? "danger-solid" : "primary";
    promptDialog.returnValue = "";
    promptDialog.showModal();
    if (label !== null) {
      input.focus();
      input.select();
    } else okButton.focus();
    return new Promise((resolve) => {
      promptDialog.addEventListener(
        "close",
        () => {
          if (promptDialog.returnValue !== "ok") return resolve(null);
          resolve({
            value: input.value.trim(),
            parent: parents && parentSelect.value ? Number(parentSelect.value) : null,
          });
        },
        { once: true }
      );
    });
  }

  function folderPaths(accountId) {
    const out = [];
    const walk = (parentId, depth) => {
      for (const mailbox of childrenOf(accountId, parentId)) {
        out.push([mailbox, depth]);
        walk(mailbox.id, depth + 1);
      }
    };
    walk(null, 0);
    return out;
  }

  async function newFolder(accountId, parentId) {
    const options = [[null, "(top level)"], ...folderPaths(accountId).map(([m, depth]) => [m.id, "\u00a0\u00a0".repeat(depth) + folderLabel(m)])];
    const answer = await ask({
      title: "New folder",
      label: "Folder name",
      ok: "Create folder",
      parents: { options, value: parentId },
    });
    if (!answer || !answer.value) return;
    const body = { account: accountId, name: answer.value };
    if (answer.parent) body.parent = answer.parent;
    try {
      const created = await api("mail/mailboxes/", { method: "POST", body });
      if (answer.parent) state.collapsed.delete(answer.parent);
      await loadMailboxes(accountId);
      toast(`Folder “${created.name}” created.`);
    } catch (error) {
      /* toasted */
    }
  }

  async function renameFolder(mailbox) {
    const answer = await ask({ title: `Rename “${folderLabel(mailbox)}”`, label: "New name", value: mailbox.name, ok: "Rename" });
    if (!answer || !answer.value || answer.value === mailbox.name) return;
    try {
      await api(`mail/mailboxes/${mailbox.id}/`, { method: "PATCH", body: { name: answer.value } });
      await loadMailboxes(mailbox.account);
      if (mailbox.id === state.mailboxId) updateListHeader();
      toast(`Renamed to “${answer.value}”.`);
    } catch (error) {
      /* toasted */
    }
  }

  async function deleteFolder(mailbox) {
    const nested = folderPaths(mailbox.account).filter(([m]) => m.path.startsWith(mailbox.path + (mailbox.delimiter || "/"))).length;
    const what = plural(mailbox.total, "message") + (nested ? ` and ${plural(nested, "subfolder")}` : "");
    const answer = await ask({
      title: `Delete “${folderLabel(mailbox)}”?`,
      text: `The folder and its ${what} are deleted on the server too. This cannot be undone.`,
      ok: "Delete folder",
      danger: true,
    });
    if (!answer) return;
    try {
      await api(`mail/mailboxes/${mailbox.id}/`, { method: "DELETE" });
      toast(`Folder “${folderLabel(mailbox)}” deleted.`);
      const wasCurrent = mailbox.id === state.mailboxId;
      await loadMailboxes(mailbox.account);
      if (wasCurrent || !state.mailboxes.has(state.mailboxId)) {
        const inbox = roleMailbox(mailbox.account, "inbox");
        if (inbox) selectMailbox(inbox.id);
      }
    } catch (error) {
      /* toasted */
    }
  }

  function folderMenu(anchor, mailbox) {
    if (!mailbox) return;
    const fixed = mailbox.role === "inbox";
    showMenu(anchor, [
      { label: "New subfolder…", action: () => newFolder(mailbox.account, mailbox.id) },
      { label: "Rename…", action: () => renameFolder(mailbox), disabled: fixed },
      { label: "Delete…", action: () => deleteFolder(mailbox), disabled: fixed, danger: true },
    ]);
  }

  function accountMenu(anchor, acc) {
    if (!acc) return;
    showMenu(anchor, [
      { label: "Check for new mail", action: () => startSync(acc.id) },
      { label: "New folder…", action: () => newFolder(acc.id, null) },
      { label: "Account settings", action: () => (location.href = `${app.dataset.accountsUrl}${acc.id}/`) },
    ]);
  }

  // Move: pick a folder of the account the messages are in.
  const moveDialog = $("move-dialog");
  const moveFilter = $("move-filter");
  const moveList = $("move-list");

  function pickFolder(accountId, excludeId, title) {
    $("move-title").textContent = title || "Move to…";
    const entries = folderPaths(accountId).filter(([m]) => m.id !== excludeId);
    const render = () => {
      const needle = moveFilter.value.trim().toLowerCase();
      moveList.replaceChildren(
        ...entries
          .filter(([m]) => !needle || m.path.toLowerCase().includes(needle))
          .map(([m, depth]) => {
            const button = el(
              "button",
              { type: "button", dataset: { pick: m.id }, title: m.path },
              icon(ROLE_ICONS[m.role] || "i-folder"),
              el("span", { text: folderLabel(m) })
            );
            button.style.setProperty("--depth", needle ? 0 : depth);
            return el("li", {}, button);
          })
      );
    };
    moveFilter.value = "";
    render();
    moveFilter.oninput = render;
    moveDialog.returnValue = "";
    moveDialog.showModal();
    moveFilter.focus();
    return new Promise((resolve) => {
      let picked = null;
      moveList.onclick = (event) => {
        const button = event.target.closest("[data-pick]");
        if (!button) return;
        picked = Number(button.dataset.pick);
        moveDialog.close("ok");
      };
      moveFilter.onkeydown = (event) => {
        if (event.key === "Enter") {
          event.preventDefault();
          const first = moveList.querySelector("[data-pick]");
          if (first) first.click();
        } else if (event.key === "ArrowDown") {
          event.preventDefault();
          const first = moveList.querySelector("[data-pick]");
          if (first) first.focus();
        }
      };
      moveList.onkeydown = (event) => {
        if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
        event.preventDefault();
        const buttons = [...moveList.querySelectorAll("[data-pick]")];
        const index = buttons.indexOf(document.activeElement);
        const next = buttons[index + (event.key === "ArrowDown" ? 1 : -1)];
        if (next) next.focus();
        else if (event.key === "ArrowUp") moveFilter.focus();
      };
      moveDialog.addEventListener("close", () => resolve(moveDialog.returnValue === "ok" ? picked : null), { once: true });
    });
  }

  // ---------------------------------------------------------------------------------------
  // Accounts: sync, errors
  // ---------------------------------------------------------------------------------------

  async function refreshAccounts() {
    try {
      const list = await apiAll("mail/accounts/?page_size=100");
      state.accounts = list;
      renderTree();
      renderBanner();
    } catch (error) {
      /* toasted */
    }
  }

  async function startSync(accountId) {
    try {
      const { job } = await api(`mail/accounts/${accountId}/sync/`, { method: "POST" });
      state.syncJobs.set(job.id, accountId);
      state.accountJobs.set(accountId, job);
      const acc = account(accountId);
      if (acc) {
        acc.sync_state = "syncing";
        acc.last_error = "";
      }
      renderTree();
      renderBanner();
    } catch (error) {
      /* toasted */
    }
  }

  function renderBanner() {
    const banner = $("list-banner");
    const acc = account(state.accountId);
    if (!acc || !acc.last_error || acc.sync_state === "syncing") return banner.replaceChildren();
    banner.replaceChildren(
      el(
        "div",
        { class: "sync-error", role: "alert" },
        icon("i-alert"),
        el("div", { class: "grow" }, el("strong", { text: "Sync failed. " }), el("span", { class: "server-words", text: acc.last_error })),
        el("button", { type: "button", onclick: () => startSync(acc.id), text: "Retry" }),
        el("a", { class: "button", href: `${app.dataset.accountsUrl}${acc.id}/`, text: "Settings" })
      )
    );
  }

  document.addEventListener("satchel:job.progress", (event) => {
    const job = event.detail.job;
    const accountId = state.syncJobs.get(job.id);
    if (!accountId) return;
    const previous = state.accountJobs.get(accountId);
    state.accountJobs.set(accountId, job);
    if (!["done", "failed", "cancelled"].includes(job.state)) {
      if (!previous || previous.state !== job.state || !tree.querySelector(`[data-job-id="${job.id}"]`)) renderTree();
      return;
    }
    state.syncJobs.delete(job.id);
    refreshAccounts().then(async () => {
      await loadMailboxes(accountId).catch(() => {});
      if (!state.mailboxId) chooseStartMailbox();
      else if (currentMailbox() && currentMailbox().account === accountId) refreshList();
    });
  });

  // ---------------------------------------------------------------------------------------
  // Message list
  // ---------------------------------------------------------------------------------------

  function listQuery() {
    const params = new URLSearchParams();
    const f = state.filters;
    const mailbox = currentMailbox();
    if (f.everywhere && mailbox) params.set("account", mailbox.account);
    else if (state.mailboxId) params.set("mailbox", state.mailboxId);
    if (state.q) params.set("q", state.q);
    for (const name of ["unread", "flagged", "has_attachments"]) if (f[name]) params.set(name, "true");
    if (f.since) params.set("since", f.since);
    if (f.before) params.set("before", f.before);
    if (f.server && state.q && !f.everywhere && state.mailboxId) params.set("server", "1");
    return params;
  }

  async function loadList(reset) {
    if (!state.mailboxId) return;
    if (reset) {
      state.listToken += 1;
      state.items = [];
      state.next = null;
      state.loadError = "";
      state.selected.clear();
      state.anchorKey = null;
      viewport.scrollTop = 0;
    } else if (state.loading || !state.next) return;
    const token = state.listToken;
    const params = listQuery();
    params.set("page_size", PAGE_SIZE);
    const url = reset ? `mail/messages/?${params}` : state.next;
    state.loading = true;
    scheduleRender();
    try {
      const page = await api(url, { quiet: true });
      if (token !== state.listToken) return;
      const known = new Set(state.items.map((m) => m.id));
      for (const message of page.results) if (!known.has(message.id)) state.items.push(remember(message));
      state.next = page.next;
    } catch (error) {
      if (token !== state.listToken) return;
      state.loadError = error.message;
      toast(error.message, "failed");
    } finally {
      if (token === state.listToken) {
        state.loading = false;
        rebuildRows();
        if (!state.cursorKey && state.rows.length) state.cursorKey = state.rows[0].key;
        updateListHeader();
      }
    }
  }

  function refreshList() {
    // Keep what is open and highlighted; reload the first page.
    const cursor = state.cursorKey;
    loadList(true).then(() => {
      if (cursor && state.rowIndex.has(cursor)) state.cursorKey = cursor;
      scheduleRender();
    });
  }

  function rowFor(message) {
    return { key: "m" + message.id, msg: message, ids: [message.id], count: 1 };
  }

  function rebuildRows() {
    if (!state.threads) {
      state.rows = state.items.map(rowFor);
    } else {
      const groups = new Map();
      const rows = [];
      for (const message of state.items) {
        const key = message.thread ? "t" + message.thread : "m" + message.id;
        let row = groups.get(key);
        if (!row) {
          row = { key, msg: message, ids: [], count: 0, thread: message.thread, people: [] };
          groups.set(key, row);
          rows.push(row);
        }
        row.ids.push(message.id);
        row.count += 1;
        const who = personName(message.sender);
        if (who && !row.people.includes(who)) row.people.push(who);
      }
      state.rows = rows;
    }
    state.rowIndex = new Map(state.rows.map((row, index) => [row.key, index]));
    if (state.cursorKey && !state.rowIndex.has(state.cursorKey)) state.cursorKey = null;
    if (state.selected.size) {
      const loaded = new Set(state.items.map((m) => m.id));
      for (const id of [...state.selected]) if (!loaded.has(id)) state.selected.delete(id);
    }
    scheduleRender();
  }

  function rowState(row) {
    const messages = row.ids.map((id) => state.messages.get(id)).filter(Boolean);
    return {
      unread: messages.some((m) => !m.seen),
      flagged: messages.some((m) => m.flagged),
      attachments: messages.some((m) => m.has_attachments),
      selected: messages.length > 0 && messages.every((m) => state.selected.has(m.id)),
    };
  }

  let renderPending = false;
  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    requestAnimationFrame(renderList);
  }

  function makeRow() {
    return el(
      "div",
      { class: "mail-row", role: "listitem" },
      el("label", { class: "row-check" }, el("input", { type: "checkbox", class: "row-select" })),
      el(
        "div",
        { class: "row-main" },
        el(
          "div",
          { class: "row-top" },
          el("span", { class: "unread-dot", "aria-hidden": "true" }),
          el("span", { class: "row-from" }),
          el("span", { class: "row-count" }),
          el("span", { class: "row-clip" }, icon("i-clip")),
          el("time", { class: "row-date" })
        ),
        el("div", { class: "row-subject" }),
        el("div", { class: "row-snippet" })
      ),
      el("button", { type: "button", class: "row-flag", "aria-pressed": "false" }, icon("i-star"))
    );
  }

  function fromLabel(row) {
    const mailbox = state.mailboxes.get(row.msg.mailbox);
    if (mailbox && (mailbox.role === "sent" || mailbox.role === "drafts")) {
      const to = (row.msg.to || []).map(personName).filter(Boolean);
      return "To: " + (to.join(", ") || "(no recipient)");
    }
    if (row.people && row.people.length > 1) return row.people.slice(0, 3).join(", ");
    return personName(row.msg.sender) || "(unknown sender)";
  }

  function fillRow(node, row, index) {
    const flags = rowState(row);
    const msg = row.msg;
    node.style.top = `${index * rowHeight}px`;
    node.dataset.key = row.key;
    node.dataset.index = index;
    node.classList.toggle("unread", flags.unread);
    node.classList.toggle("flagged", flags.flagged);
    node.classList.toggle("selected", flags.selected);
    node.classList.toggle("cursor", row.key === state.cursorKey);
    node.classList.toggle("open", row.key === state.openKey);
    const signature = [msg.id, msg.subject, msg.date, row.count, flags.unread, flags.flagged, flags.attachments, flags.selected].join("|");
    if (node._signature === signature) return;
    node._signature = signature;
    const from = fromLabel(row);
    const subject = msg.subject || "(no subject)";
    node.querySelector(".row-from").textContent = from;
    node.querySelector(".row-count").textContent = row.count > 1 ? String(row.count) : "";
    node.querySelector(".row-clip").hidden = !flags.attachments;
    const date = node.querySelector(".row-date");
    date.textContent = shortDate(msg.date);
    date.dateTime = msg.date;
    date.title = fullFormat.format(new Date(msg.date));
    node.querySelector(".row-subject").textContent = subject;
    node.querySelector(".row-snippet").textContent = msg.snippet || "";
    const check = node.querySelector(".row-select");
    check.checked = flags.selected;
    check.setAttribute("aria-label", `Select: ${subject}, from ${from}`);
    const flag = node.querySelector(".row-flag");
    flag.setAttribute("aria-pressed", String(flags.flagged));
    flag.setAttribute("aria-label", flags.flagged ? "Remove flag" : "Flag");
    flag.title = flags.flagged ? "Remove flag (s)" : "Flag (s)";
    node.setAttribute(
      "aria-label",
      `${flags.unread ? "Unread. " : ""}${from}: ${subject}. ${shortDate(msg.date)}${row.count > 1 ? `. ${row.count} messages` : ""}`
    );
  }

  let loaderRow = null;

  function renderList() {
    renderPending = false;
    const rows = state.rows;
    const count = rows.length;
    const more = Boolean(state.next) || state.loading;
    spacer.style.height = `${(count + (more ? 1 : 0)) * rowHeight}px`;
    const top = viewport.scrollTop;
    const height = viewport.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / rowHeight) - OVERSCAN);
    const last = Math.min(count, Math.ceil((top + height) / rowHeight) + OVERSCAN);
    const keep = new Set();
    for (let index = first; index < last; index += 1) keep.add(rows[index].key);
    for (const [key, node] of rendered) {
      if (!keep.has(key)) {
        node.remove();
        rendered.delete(key);
      }
    }
    // The DOM order follows the list order, so assistive technology reads it as shown.
    let previous = null;
    for (let index = first; index < last; index += 1) {
      const row = rows[index];
      let node = rendered.get(row.key);
      if (!node) {
        node = makeRow();
        rendered.set(row.key, node);
      }
      fillRow(node, row, index);
      node.setAttribute("aria-posinset", String(index + 1));
      node.setAttribute("aria-setsize", more ? "-1" : String(count));
      const wanted = previous ? previous.nextSibling : spacer.firstChild;
      if (node !== wanted) spacer.insertBefore(node, wanted);
      previous = node;
    }
    if (more && last >= count - 1) {
      if (!loaderRow) loaderRow = el("div", { class: "list-loading", role: "status" }, el("span", { class: "spinner" }), "Loading…");
      loaderRow.style.top = `${count * rowHeight}px`;
      if (!loaderRow.isConnected) spacer.append(loaderRow);
    } else if (loaderRow) loaderRow.remove();
    if (state.next && !state.loading && last >= count - LOAD_AHEAD) loadList(false);
    renderEmpty();
    renderToolbar();
  }

  function renderEmpty() {
    const mailbox = currentMailbox();
    let content = null;
    if (state.rows.length || state.loading) content = null;
    else if (state.loadError) {
      content = [
        el("p", { class: "empty-title", text: "Could not load messages" }),
        el("p", { class: "muted server-words", text: state.loadError }),
        el("button", { type: "button", onclick: () => loadList(true), text: "Try again" }),
      ];
    } else if (!mailbox) {
      const acc = account(state.accountId) || state.accounts[0];
      const syncing = acc && (acc.sync_state === "syncing" || [...state.syncJobs.values()].includes(acc.id));
      content = syncing
        ? [el("span", { class: "spinner large" }), el("p", { class: "empty-title", text: "Fetching your folders…" }), el("p", { class: "muted", text: "The first sync has started; messages appear here as they arrive." })]
        : [icon("i-inbox", "large"), el("p", { class: "empty-title", text: "No folder selected" }), el("p", { class: "muted", text: "Pick a folder, or check the account for mail." })];
    } else if (searching()) {
      content = [
        icon("i-search", "large"),
        el("p", { class: "empty-title", text: "No messages match" }),
        el("p", { class: "muted", text: state.q && !state.filters.server && !state.filters.everywhere ? "Try other words, or search the server too (filters)." : "Try other words or fewer filters." }),
      ];
    } else {
      const acc = account(mailbox.account);
      const syncing = acc && acc.sync_state === "syncing";
      content = [
        icon(ROLE_ICONS[mailbox.role] || "i-folder", "large"),
        el("p", { class: "empty-title", text: syncing && mailbox.total ? `Fetching ${folderLabel(mailbox)}…` : `No messages in ${folderLabel(mailbox)}` }),
        el("p", { class: "muted", text: syncing ? "The sync is running; new messages appear here as they arrive." : mailbox.role === "inbox" ? "New mail shows up here as soon as it arrives." : "Messages you move here will show up in this list." }),
      ];
    }
    listEmpty.hidden = !content;
    if (content) listEmpty.replaceChildren(...content);
  }

  function updateListHeader() {
    const mailbox = currentMailbox();
    const acc = mailbox ? account(mailbox.account) : account(state.accountId);
    let title = mailbox ? folderLabel(mailbox) : acc ? acc.name : "Mail";
    if (searching()) title = state.q ? `Search: ${state.q}` : "Filtered";
    $("list-title").textContent = title;
    $("list-title").title = mailbox ? `${mailbox.path} — ${acc ? acc.name : ""}` : "";
    const unread = mailbox ? mailbox.unread : 0;
    document.title = `${unread ? `(${unread}) ` : ""}${mailbox ? folderLabel(mailbox) : "Mail"} · Satchel`;
    renderToolbar();
  }

  function renderToolbar() {
    const mailbox = currentMailbox();
    const selected = state.selected.size;
    $("bulk-actions").hidden = selected === 0;
    $("list-summary").hidden = selected > 0;
    $("bulk-count").textContent = `${selected.toLocaleString()} selected`;
    let summary = "";
    if (searching()) {
      summary = state.loading && !state.items.length ? "Searching…" : `${plural(state.items.length, "result")}${state.next ? "+" : ""}`;
    } else if (mailbox) {
      summary = `${plural(mailbox.total, "message")}${mailbox.unread ? ` · ${mailbox.unread.toLocaleString()} unread` : ""}`;
    }
    $("list-summary").textContent = summary;
    $("list-count").textContent = "";
    const all = $("select-all");
    const loaded = state.items.length;
    all.checked = loaded > 0 && selected >= loaded;
    all.indeterminate = selected > 0 && selected < loaded;
    all.disabled = loaded === 0;
  }

  viewport.addEventListener("scroll", scheduleRender, { passive: true });
  new ResizeObserver(() => {
    measureRow();
    scheduleRender();
  }).observe(viewport);

  function measureRow() {
    const value = parseFloat(getComputedStyle(spacer).getPropertyValue("--row-h"));
    if (value && value !== rowHeight) {
      rowHeight = value;
      for (const node of rendered.values()) node._signature = null;
    }
  }

  function ensureVisible(index) {
    const top = index * rowHeight;
    if (top < viewport.scrollTop) viewport.scrollTop = top;
    else if (top + rowHeight > viewport.scrollTop + viewport.clientHeight) viewport.scrollTop = top + rowHeight - viewport.clientHeight;
  }

  function setCursor(index) {
    if (!state.rows.length) return;
    const clamped = Math.max(0, Math.min(state.rows.length - 1, index));
    state.cursorKey = state.rows[clamped].key;
    ensureVisible(clamped);
    scheduleRender();
  }

  function cursorIndex() {
    return state.cursorKey && state.rowIndex.has(state.cursorKey) ? state.rowIndex.get(state.cursorKey) : -1;
  }

  function toggleSelect(row, on) {
    for (const id of row.ids) {
      if (on) state.selected.add(id);
      else state.selected.delete(id);
    }
  }

  function selectRange(fromKey, toKey, on) {
    const a = state.rowIndex.get(fromKey);
    const b = state.rowIndex.get(toKey);
    if (a === undefined || b === undefined) return;
    for (let index = Math.min(a, b); index <= Math.max(a, b); index += 1) toggleSelect(state.rows[index], on);
  }

  spacer.addEventListener("click", (event) => {
    const node = event.target.closest(".mail-row");
    if (!node) return;
    const row = state.rows[state.rowIndex.get(node.dataset.key)];
    if (!row) return;
    if (event.target.closest(".row-flag")) {
      event.preventDefault();
      const flagged = rowState(row).flagged;
      setFlags(row.ids, { flagged: !flagged });
      return;
    }
    const checkbox = event.target.closest(".row-check");
    if (checkbox || event.ctrlKey || event.metaKey || event.shiftKey) {
      if (event.target.tagName !== "INPUT") event.preventDefault();
      const on = !rowState(row).selected;
      if (event.shiftKey && state.anchorKey) selectRange(state.anchorKey, row.key, on);
      else toggleSelect(row, on);
      state.anchorKey = row.key;
      state.cursorKey = row.key;
      scheduleRender();
      return;
    }
    state.anchorKey = row.key;
    openRow(row);
  });

  // A draft opens in the compose dialog on double-click, as in Thunderbird and Roundcube
  // (Enter and o too; a single click shows it here, with an "Edit draft" button).
  spacer.addEventListener("dblclick", (event) => {
    const node = event.target.closest(".mail-row");
    const row = node && state.rows[state.rowIndex.get(node.dataset.key)];
    if (row && isDraft(row.msg) && !event.target.closest(".row-check, .row-flag")) editDraft(row.msg.id);
  });

  $("select-all").addEventListener("change", (event) => {
    if (event.target.checked) for (const message of state.items) state.selected.add(message.id);
    else state.selected.clear();
    scheduleRender();
  });

  // ---------------------------------------------------------------------------------------
  // Choosing a folder, searching, conversation view
  // ---------------------------------------------------------------------------------------

  function updateUrl() {
    const params = new URLSearchParams();
    if (state.mailboxId) params.set("mailbox", state.mailboxId);
    if (reader.messages.length && reader.expanded) params.set("message", reader.expanded);
    const query = params.toString();
    history.replaceState(history.state, "", query ? `?${query}` : location.pathname);
  }

  function selectMailbox(id, { keepReader = false } = {}) {
    const mailbox = state.mailboxes.get(id);
    if (!mailbox) return;
    const changed = state.mailboxId !== id;
    state.mailboxId = id;
    state.accountId = mailbox.account;
    if (changed && !keepReader) closeReader();
    state.cursorKey = null;
    renderTree();
    renderBanner();
    updateListHeader();
    updateServerOption();
    closeDrawer();
    if (narrowQuery.matches && !keepReader) setView("list");
    loadList(true);
    updateUrl();
  }

  function chooseStartMailbox() {
    const wanted = start.mailbox && state.mailboxes.get(start.mailbox);
    if (wanted) return selectMailbox(wanted.id, { keepReader: true });
    // Asked for one account (just added: its first sync is running): wait for its folders.
    const accountIds = start.account && account(start.account) ? [start.account] : state.accounts.map((a) => a.id);
    for (const id of accountIds) {
      const inbox = roleMailbox(id, "inbox") || childrenOf(id, null)[0];
      if (inbox) return selectMailbox(inbox.id, { keepReader: true });
    }
    state.accountId = (account(start.account) || state.accounts[0] || {}).id || null;
    renderBanner();
    renderEmpty();
  }

  // A sync started before this page opened (the first one of a new account) may have
  // finished before the live events connected: ask once how it is doing.
  async function checkStartJob() {
    if (!start.job || !state.syncJobs.has(start.job)) return;
    try {
      const job = await api(`jobs/${start.job}/`, { quiet: true });
      document.dispatchEvent(new CustomEvent("satchel:job.progress", { detail: { type: "job.progress", job } }));
    } catch (error) {
      state.syncJobs.delete(start.job);
      renderTree();
    }
  }

  let searchTimer = null;
  searchInput.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(applySearch, 350);
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(searchTimer);
    applySearch();
  });
  searchInput.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      if (searchInput.value) {
        searchInput.value = "";
        applySearch();
      } else searchInput.blur();
    } else if (event.key === "ArrowDown") {
      event.preventDefault();
      searchInput.blur();
      setCursor(0);
    }
  });

  function applySearch() {
    const q = searchInput.value.trim();
    if (q === state.q) return;
    state.q = q;
    updateServerOption();
    updateListHeader();
    loadList(true);
  }

  function updateServerOption() {
    const box = filtersBox.elements.namedItem("server");
    const possible = Boolean(state.q) && !state.filters.everywhere && Boolean(state.mailboxId);
    box.disabled = !possible;
    $("server-option").classList.toggle("disabled", !possible);
    $("server-option").title = possible ? "" : "Type a search and pick one folder to ask its server too.";
  }

  function filtersActive() {
    const f = state.filters;
    return f.unread || f.flagged || f.has_attachments || Boolean(f.since) || Boolean(f.before) || f.everywhere || f.server;
  }

  filtersBox.addEventListener("change", (event) => {
    const input = event.target;
    if (!input.name) return;
    state.filters[input.name] = input.type === "checkbox" ? input.checked : input.value;
    if (input.name === "everywhere") updateServerOption();
    $("filters-dot").hidden = !filtersActive();
    updateListHeader();
    loadList(true);
  });

  $("filters-clear").addEventListener("click", () => {
    for (const input of filtersBox.querySelectorAll("input")) {
      if (input.type === "checkbox") input.checked = false;
      else input.value = "";
      if (input.name) state.filters[input.name] = input.type === "checkbox" ? false : "";
    }
    $("filters-dot").hidden = true;
    updateServerOption();
    updateListHeader();
    loadList(true);
  });

  function toggleFilters(open) {
    const show = open === undefined ? filtersBox.hidden : open;
    filtersBox.hidden = !show;
    $("filters-button").setAttribute("aria-expanded", String(show));
  }
  $("filters-button").addEventListener("click", () => toggleFilters());

  const threadsButton = $("toggle-threads");
  function renderThreadsButton() {
    threadsButton.setAttribute("aria-pressed", String(state.threads));
    threadsButton.title = state.threads ? "Conversation view: on" : "Conversation view: off";
  }
  threadsButton.addEventListener("click", () => {
    state.threads = !state.threads;
    localStorage.setItem("satchel.mail.threads", state.threads ? "1" : "0");
    renderThreadsButton();
    state.cursorKey = null;
    rebuildRows();
  });
  renderThreadsButton();

  $("sync-button").addEventListener("click", () => {
    const mailbox = currentMailbox();
    const accountId = mailbox ? mailbox.account : state.accountId;
    if (accountId) startSync(accountId);
  });

  // ---------------------------------------------------------------------------------------
  // Phone layout: one pane at a time; folders in a drawer
  // ---------------------------------------------------------------------------------------

  function setView(view) {
    app.dataset.view = view;
  }

  function openDrawer() {
    app.classList.add("drawer-open");
    const current = tree.querySelector("[aria-current=page]") || tree.querySelector("a");
    if (current) current.focus();
  }

  function closeDrawer() {
    if (!app.classList.contains("drawer-open")) return false;
    app.classList.remove("drawer-open");
    return true;
  }

  $("open-folders").addEventListener("click", openDrawer);
  $("close-folders").addEventListener("click", closeDrawer);
  $("drawer-backdrop").addEventListener("click", closeDrawer);
  $("reader-back").addEventListener("click", backToList);

  // On a phone, opening a message is a step the browser's Back button undoes.
  function showMessageView() {
    if (narrowQuery.matches && app.dataset.view !== "message" && !(history.state && history.state.mailView)) {
      history.pushState({ mailView: "message" }, "", location.href);
    }
    setView("message");
  }

  function backToList() {
    if (history.state && history.state.mailView === "message") {
      history.back(); // popstate shows the list
      return;
    }
    showList();
  }

  function showList() {
    setView("list");
    const index = cursorIndex();
    if (index >= 0) ensureVisible(index);
    scheduleRender();
  }

  // ---------------------------------------------------------------------------------------
  // Reading pane
  // ---------------------------------------------------------------------------------------

  const readerContent = $("reader-content");
  const readerScroll = $("reader-scroll");

  function closeReader() {
    reader.token += 1;
    reader.messages = [];
    reader.expanded = null;
    reader.detail = null;
    reader.rowKey = null;
    state.openKey = null;
    readerContent.hidden = true;
    $("reader-empty").hidden = false;
    readerScroll.replaceChildren();
    updateUrl();
  }

  function bodyUrl(id, images) {
    return app.dataset.bodyUrl.replace("{id}", id) + (images ? "?images=1" : "");
  }

  async function openRow(row) {
    state.cursorKey = row.key;
    state.openKey = row.key;
    reader.rowKey = row.key;
    scheduleRender();
    if (state.threads && row.thread && row.count >= 1) return openThread(row.thread, row.msg.id);
    return openMessage(row.msg.id);
  }

  function readerLoading() {
    $("reader-empty").hidden = true;
    readerContent.hidden = false;
    readerScroll.replaceChildren(el("div", { class: "reader-loading", role: "status" }, el("span", { class: "spinner" }), "Loading message…"));
    showMessageView();
  }

  async function openMessage(id) {
    const token = ++reader.token;
    readerLoading();
    let detail;
    try {
      detail = await api(`mail/messages/${id}/`);
    } catch (error) {
      if (token === reader.token) readerError(error.message);
      return;
    }
    if (token !== reader.token) return;
    reader.messages = [remember(stripBody(detail))];
    reader.expanded = id;
    reader.detail = withoutBody(detail);
    reader.images = false;
    renderReader();
    updateUrl();
    if (!state.messages.get(id).seen) setFlags([id], { seen: true });
  }

  async function openThread(threadId, focusId) {
    const token = ++reader.token;
    readerLoading();
    let messages;
    try {
      const page = await api(`mail/messages/?thread=${threadId}&page_size=200`);
      messages = page.results.map(remember).reverse();
    } catch (error) {
      if (token === reader.token) readerError(error.message);
      return;
    }
    if (token !== reader.token) return;
    if (!messages.length) return openMessage(focusId);
    const firstUnread = messages.find((m) => !m.seen);
    const expanded = (firstUnread || messages[messages.length - 1]).id;
    reader.messages = messages;
    await expandMessage(expanded, token);
    const unread = messages.filter((m) => !m.seen).map((m) => m.id);
    if (unread.length) setFlags(unread, { seen: true });
  }

  async function expandMessage(id, token = ++reader.token) {
    let detail;
    try {
      detail = await api(`mail/messages/${id}/`);
    } catch (error) {
      if (token === reader.token) readerError(error.message);
      return;
    }
    if (token !== reader.token) return;
    remember(stripBody(detail));
    reader.expanded = id;
    reader.detail = withoutBody(detail);
    reader.images = false;
    renderReader();
    updateUrl();
  }

  // The page keeps the headers and attachments; the body itself only ever lives in the frame.
  function withoutBody(detail) {
    const copy = { ...detail };
    delete copy.html;
    delete copy.text;
    return copy;
  }

  // The list keeps only what the list serializer has.
  function stripBody(detail) {
    const copy = { ...detail };
    for (const name of ["html", "text", "headers", "attachments", "remote_images_blocked"]) delete copy[name];
    return copy;
  }

  function readerError(text) {
    readerScroll.replaceChildren(
      el("div", { class: "reader-failed", role: "alert" }, icon("i-alert", "large"), el("p", { class: "empty-title", text: "This message could not be opened" }), el("p", { class: "muted server-words", text }))
    );
  }

  function addressLine(label, list) {
    if (!list || !list.length) return null;
    return el(
      "div",
      { class: "msg-addresses" },
      el("span", { class: "label", text: label }),
      list.map((address, index) => [index ? ", " : "", el("span", { class: "address", title: address.email, text: personName(address) })])
    );
  }

  function expandedArticle(detail) {
    const sender = detail.sender || {};
    const date = new Date(detail.date);
    const attachments = (detail.attachments || []).filter((a) => !(a.inline && a.content_id && a.content_type.startsWith("image/")));
    const article = el(
      "article",
      { class: "msg expanded", dataset: { message: detail.id } },
      el(
        "header",
        { class: "msg-head" },
        avatar(sender),
        el(
          "div",
          { class: "msg-meta" },
          el(
            "div",
            { class: "msg-from" },
            el("strong", { text: sender.name || sender.email || "(unknown sender)" }),
            sender.name && sender.email ? el("span", { class: "muted email", text: `<${sender.email}>` }) : null
          ),
          addressLine("To", detail.to),
          addressLine("Cc", detail.cc)
        ),
        el("time", { class: "msg-date muted", datetime: detail.date, title: fullFormat.format(date), text: headerFormat.format(date) })
      )
    );
    if (isDraft(detail)) {
      article.prepend(
        el(
          "div",
          { class: "draft-bar", role: "note" },
          icon("i-drafts"),
          el("span", { text: "This is a draft: it has not been sent." }),
          el("button", { type: "button", class: "primary draft-edit", onclick: () => editDraft(detail.id), text: "Edit draft" })
        )
      );
    }
    if (attachments.length) {
      const ftpJobs = el("div", { class: "fp-jobs" });
      article.append(
        el(
          "ul",
          { class: "attachments", "aria-label": "Attachments" },
          attachments.map((a) =>
            el(
              "li",
              { class: "fp-attachment" },
              el(
                "a",
                { href: `${API}mail/attachments/${a.id}/`, download: a.filename || "attachment", title: `${a.filename} (${a.content_type})` },
                icon("i-clip"),
                el("span", { class: "name", text: a.filename || "attachment" }),
                el("span", { class: "size muted", text: formatSize(a.size || 0) }),
                icon("i-download", "download")
              ),
              el("button", { type: "button", class: "fp-save", title: `Save ${a.filename || "the attachment"} to one of your FTP sites`, text: "Save to FTP…", onclick: () => window.Satchel.ftpPicker.saveAttachment(a, ftpJobs) })
            )
          )
        ),
        ftpJobs
      );
    }
    if (detail.remote_images_blocked && !reader.images) {
      article.append(
        el(
          "div",
          { class: "images-bar", role: "note" },
          icon("i-image"),
          el("span", { class: "grow", text: `${plural(detail.remote_images_blocked, "remote image")} blocked to protect your privacy.` }),
          el("button", { type: "button", class: "link", id: "show-images", text: "Show images", onclick: showImages })
        )
      );
    }
    article.append(
      el("iframe", {
        class: "msg-frame",
        sandbox: "allow-popups allow-popups-to-escape-sandbox",
        referrerpolicy: "no-referrer",
        title: `Message: ${detail.subject || "(no subject)"}`,
        src: bodyUrl(detail.id, reader.images),
      })
    );
    return article;
  }

  function collapsedArticle(message) {
    return el(
      "article",
      { class: "msg collapsed" + (message.seen ? "" : " unread") },
      el(
        "button",
        { type: "button", class: "msg-collapsed", onclick: () => expandMessage(message.id), "aria-label": `Show the message from ${personName(message.sender)}, ${shortDate(message.date)}` },
        avatar(message.sender),
        el("strong", { class: "who", text: personName(message.sender) || "(unknown sender)" }),
        el("span", { class: "snippet muted", text: message.snippet || "" }),
        el("time", { class: "muted", datetime: message.date, text: shortDate(message.date) })
      )
    );
  }

  function renderReader() {
    const detail = reader.detail;
    if (!detail) return;
    $("reader-empty").hidden = true;
    readerContent.hidden = false;
    const subject = detail.subject || "(no subject)";
    const heading = el("h2", { class: "reader-subject", id: "reader-subject", text: subject });
    if (reader.messages.length > 1) heading.append(el("span", { class: "thread-size", text: plural(reader.messages.length, "message") }));
    const parts = reader.messages.map((m) => (m.id === reader.expanded ? expandedArticle(detail) : collapsedArticle(m)));
    readerScroll.replaceChildren(heading, ...parts);
    readerScroll.scrollTop = 0;
    const expanded = readerScroll.querySelector(".msg.expanded");
    if (expanded && reader.messages.length > 1) expanded.scrollIntoView({ block: "nearest" });
    $("reader-source").href = app.dataset.sourceUrl.replace("{id}", detail.id);
    renderReaderToolbar();
  }

  function renderReaderToolbar() {
    const message = reader.expanded && state.messages.get(reader.expanded);
    if (!message) return;
    const seenButton = readerContent.querySelector('[data-action="seen"]');
    seenButton.title = message.seen ? "Mark unread (u)" : "Mark read (u)";
    seenButton.querySelector(".sr-only").textContent = message.seen ? "Mark unread" : "Mark read";
    seenButton.querySelector("use").setAttribute("href", message.seen ? "#i-mail" : "#i-mail-open");
    const flagButton = readerContent.querySelector('[data-action="flag"]');
    flagButton.setAttribute("aria-pressed", String(Boolean(message.flagged)));
    flagButton.title = message.flagged ? "Remove flag (s)" : "Flag (s)";
    flagButton.querySelector(".sr-only").textContent = message.flagged ? "Remove flag" : "Flag";
    const mailbox = state.mailboxes.get(message.mailbox);
    const inTrash = mailbox && mailbox.role === "trash";
    readerContent.querySelector('[data-action="delete"]').title = inTrash ? "Delete forever (#)" : "Delete (#)";
  }

  function showImages() {
    reader.images = true;
    const bar = readerScroll.querySelector(".images-bar");
    if (bar) bar.remove();
    const frame = readerScroll.querySelector(".msg-frame");
    if (frame && reader.detail) frame.src = bodyUrl(reader.detail.id, true);
  }

  function isDraft(message) {
    const mailbox = message && state.mailboxes.get(message.mailbox);
    return Boolean(mailbox && mailbox.role === "drafts");
  }

  // compose.js resumes our own draft (same Message-ID) or fills the dialog from the message.
  function editDraft(id) {
    document.dispatchEvent(new CustomEvent("satchel:compose", { detail: { action: "draft", id } }));
  }

  // Compose (static/js/compose.js listens): a new message, or a reply to / forward of the open one.
  function compose(action) {
    const detail = { action, id: action === "new" ? null : reader.expanded, account: state.accountId };
    document.dispatchEvent(new CustomEvent("satchel:compose", { detail }));
  }

  readerContent.querySelector(".reader-toolbar").addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (!button) return;
    if (button.dataset.compose) {
      if (reader.expanded) compose(button.dataset.compose);
      return;
    }
    const ids = readerIds();
    if (!ids.length) return;
    const action = button.dataset.action;
    if (action === "seen") toggleSeen(ids);
    else if (action === "flag") toggleFlag(ids);
    else if (action === "archive") archive(ids);
    else if (action === "delete") remove(ids);
    else if (action === "move") moveTo(ids);
  });

  // The reader's buttons act on what is open: the conversation's messages in this list,
  // or the one message.
  function readerIds() {
    const row = reader.rowKey && state.rowIndex.has(reader.rowKey) ? state.rows[state.rowIndex.get(reader.rowKey)] : null;
    if (row) return row.ids;
    return reader.expanded ? [reader.expanded] : [];
  }

  // ---------------------------------------------------------------------------------------
  // Actions: flags, move, archive, delete
  // ---------------------------------------------------------------------------------------

  function targetIds() {
    if (state.selected.size) return [...state.selected];
    const index = cursorIndex();
    if (index >= 0) return state.rows[index].ids;
    return readerIds();
  }

  function afterChange() {
    rebuildRows();
    renderReaderToolbar();
  }

  async function setFlags(ids, change) {
    const messages = ids.map((id) => state.messages.get(id)).filter(Boolean);
    const name = Object.keys(change)[0];
    const value = change[name];
    const changing = messages.filter((m) => m[name] !== value);
    if (!changing.length) return;
    for (const m of changing) m[name] = value;
    afterChange();
    const changedIds = changing.map((m) => m.id);
    try {
      if (changedIds.length === 1) {
        await api(`mail/messages/${changedIds[0]}/`, { method: "PATCH", body: change });
      } else {
        const action = name === "seen" ? (value ? "read" : "unread") : value ? "flag" : "unflag";
        await api("mail/messages/bulk/", { method: "POST", body: { ids: changedIds, action } });
      }
    } catch (error) {
      for (const m of changing) m[name] = !value;
      afterChange();
    }
  }

  function toggleSeen(ids) {
    const messages = ids.map((id) => state.messages.get(id)).filter(Boolean);
    setFlags(ids, { seen: messages.some((m) => !m.seen) });
  }

  function toggleFlag(ids) {
    const messages = ids.map((id) => state.messages.get(id)).filter(Boolean);
    setFlags(ids, { flagged: !messages.some((m) => m.flagged) });
  }

  // Take messages out of the list (moved or deleted) and keep the cursor where it was.
  function dropFromList(ids) {
    const gone = new Set(ids);
    const index = cursorIndex();
    const openGone = reader.messages.some((m) => gone.has(m.id) && m.id === reader.expanded);
    state.items = state.items.filter((m) => !gone.has(m.id));
    for (const id of gone) state.selected.delete(id);
    const oldCursor = state.cursorKey;
    rebuildRows();
    if (oldCursor && !state.rowIndex.has(oldCursor) && state.rows.length) {
      state.cursorKey = state.rows[Math.min(Math.max(index, 0), state.rows.length - 1)].key;
    }
    if (openGone) {
      const rest = reader.messages.filter((m) => !gone.has(m.id));
      if (rest.length && state.threads) {
        reader.messages = rest;
        expandMessage(rest[rest.length - 1].id);
      } else if (narrowQuery.matches) {
        closeReader();
        backToList();
      } else {
        const next = cursorIndex() >= 0 ? state.rows[cursorIndex()] : null;
        if (next) openRow(next);
        else closeReader();
      }
    }
    for (const id of gone) state.messages.delete(id);
    scheduleRender();
  }

  function accountOf(ids) {
    const message = state.messages.get(ids[0]);
    const mailbox = message && state.mailboxes.get(message.mailbox);
    return mailbox ? mailbox.account : state.accountId;
  }

  async function moveIds(ids, target, verb) {
    const mailbox = state.mailboxes.get(target);
    try {
      if (ids.length === 1) await api(`mail/messages/${ids[0]}/move/`, { method: "POST", body: { mailbox: target } });
      else await api("mail/messages/bulk/", { method: "POST", body: { ids, action: "move", mailbox: target } });
    } catch (error) {
      return;
    }
    dropFromList(ids);
    toast(`${verb} ${plural(ids.length, "message")}${mailbox ? ` to ${folderLabel(mailbox)}` : ""}.`);
  }

  async function moveTo(ids) {
    if (!ids.length) return;
    const message = state.messages.get(ids[0]);
    const target = await pickFolder(accountOf(ids), message ? message.mailbox : null, `Move ${plural(ids.length, "message")} to…`);
    if (target) moveIds(ids, target, "Moved");
  }

  function archive(ids) {
    if (!ids.length) return;
    const accountId = accountOf(ids);
    const target = roleMailbox(accountId, "archive");
    const acc = account(accountId);
    if (!target) {
      toast(`${acc ? acc.name : "This account"} has no Archive folder. Mark one as Archive on the server, or move the message with v.`, "failed");
      return;
    }
    const here = ids.filter((id) => {
      const m = state.messages.get(id);
      return m && m.mailbox !== target.id;
    });
    if (!here.length) {
      toast("Already in the archive.");
      return;
    }
    moveIds(here, target.id, "Archived");
  }

  async function remove(ids) {
    if (!ids.length) return;
    const first = state.messages.get(ids[0]);
    const mailbox = first && state.mailboxes.get(first.mailbox);
    const trash = roleMailbox(accountOf(ids), "trash");
    const forever = !trash || (mailbox && mailbox.role === "trash");
    if (forever) {
      const answer = await ask({
        title: `Delete ${plural(ids.length, "message")} forever?`,
        text: trash ? "They are in the Trash already: deleting removes them from the server for good." : "This account has no Trash folder: deleting removes them from the server for good.",
        ok: "Delete forever",
        danger: true,
      });
      if (!answer) return;
    }
    try {
      if (ids.length === 1) await api(`mail/messages/${ids[0]}/`, { method: "DELETE" });
      else await api("mail/messages/bulk/", { method: "POST", body: { ids, action: "delete" } });
    } catch (error) {
      return;
    }
    dropFromList(ids);
    toast(forever ? `Deleted ${plural(ids.length, "message")}.` : `Moved ${plural(ids.length, "message")} to the Trash.`);
  }

  $("bulk-actions").addEventListener("click", (event) => {
    const button = event.target.closest("[data-bulk]");
    if (!button) return;
    const ids = [...state.selected];
    if (!ids.length) return;
    const verb = button.dataset.bulk;
    if (verb === "read") setFlags(ids, { seen: true });
    else if (verb === "unread") setFlags(ids, { seen: false });
    else if (verb === "flag") toggleFlag(ids);
    else if (verb === "move") moveTo(ids);
    else if (verb === "archive") archive(ids);
    else if (verb === "delete") remove(ids);
  });

  // ---------------------------------------------------------------------------------------
  // Keyboard
  // ---------------------------------------------------------------------------------------

  const helpDialog = $("help-dialog");
  function showHelp() {
    if (!helpDialog.open) helpDialog.showModal();
  }
  $("help-button").addEventListener("click", showHelp);

  function step(delta) {
    const listHidden = narrowQuery.matches && app.dataset.view === "message";
    const index = cursorIndex();
    const next = index < 0 ? 0 : index + delta;
    if (next < 0 || next >= state.rows.length) return;
    setCursor(next);
    if (listHidden) openRow(state.rows[next]);
  }

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (document.querySelector("dialog[open]")) return;
    if (event.key === "Escape") {
      if (closeMenu() || closeDrawer()) return;
      if (!filtersBox.hidden) return toggleFilters(false);
      if (narrowQuery.matches && app.dataset.view === "message") return backToList();
      if (state.selected.size) {
        state.selected.clear();
        scheduleRender();
      }
      return;
    }
    if (isTyping(event.target) || openMenuEl) return;
    const onControl = event.target.closest && event.target.closest("button, a, summary");
    switch (event.key) {
      case "j":
      case "ArrowDown":
        event.preventDefault();
        step(1);
        break;
      case "k":
      case "ArrowUp":
        event.preventDefault();
        step(-1);
        break;
      case "o":
      case "Enter": {
        if (event.key === "Enter" && onControl) return;
        const index = cursorIndex();
        if (index < 0) return;
        event.preventDefault();
        openRow(state.rows[index]);
        if (isDraft(state.rows[index].msg)) editDraft(state.rows[index].msg.id);
        break;
      }
      case "x": {
        const index = cursorIndex();
        if (index < 0) return;
        const row = state.rows[index];
        toggleSelect(row, !rowState(row).selected);
        state.anchorKey = row.key;
        scheduleRender();
        break;
      }
      case "u":
        toggleSeen(targetIds());
        break;
      case "s":
        toggleFlag(targetIds());
        break;
      case "#":
        event.preventDefault();
        remove(targetIds());
        break;
      case "e":
        archive(targetIds());
        break;
      case "v":
        event.preventDefault();
        moveTo(targetIds());
        break;
      case "/":
        event.preventDefault();
        if (narrowQuery.matches) setView("list");
        searchInput.focus();
        searchInput.select();
        break;
      case "?":
        event.preventDefault();
        showHelp();
        break;
      case "c":
      case "r":
      case "a":
      case "f": {
        // c new; r reply, a reply all, f forward.
        const action = { c: "new", r: "reply", a: "replyAll", f: "forward" }[event.key];
        if (action !== "new" && !reader.expanded) return;
        event.preventDefault();
        compose(action);
        break;
      }
      default:
    }
  });

  // ---------------------------------------------------------------------------------------
  // Live events
  // ---------------------------------------------------------------------------------------

  document.addEventListener("satchel:mailbox.counts", (event) => {
    const { mailbox: id, account: accountId, total, unread } = event.detail;
    const mailbox = state.mailboxes.get(id);
    if (!mailbox) {
      if (account(accountId)) reloadMailboxesSoon(accountId);
      return;
    }
    mailbox.total = total;
    mailbox.unread = unread;
    updateFolderCounts(mailbox);
    if (id === state.mailboxId) {
      updateListHeader();
      // A first sync fills the folder while we look at it: show its newest messages.
      if (!searching() && state.items.length < PAGE_SIZE && total > state.items.length) refreshListSoon();
    }
  });

  let refreshTimer = null;
  function refreshListSoon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => {
      if (state.items.length < PAGE_SIZE && !state.loading) refreshList();
    }, 600);
  }

  function sortsBefore(a, b) {
    return a.date > b.date || (a.date === b.date && a.id > b.id);
  }

  document.addEventListener("satchel:mail.new", async (event) => {
    const { mailbox: id, account: accountId, count } = event.detail;
    const mailbox = state.mailboxes.get(id);
    if (!mailbox) {
      if (account(accountId)) reloadMailboxesSoon(accountId);
      return;
    }
    if (id !== state.mailboxId || searching()) return;
    const token = state.listToken;
    let page;
    try {
      const params = listQuery();
      params.set("page_size", Math.min(PAGE_SIZE, Math.max(20, count)));
      page = await api(`mail/messages/?${params}`, { quiet: true });
    } catch (error) {
      return;
    }
    if (token !== state.listToken) return;
    const known = new Set(state.items.map((m) => m.id));
    const last = state.items[state.items.length - 1];
    const fresh = page.results.filter((m) => !known.has(m.id) && (!state.next || !last || sortsBefore(m, last)));
    if (!fresh.length) return;
    // Keep the rows in view where they are: the new ones grow the list above them.
    const anchorRow = viewport.scrollTop > 0 ? state.rows[Math.floor(viewport.scrollTop / rowHeight)] : null;
    const anchorOffset = anchorRow ? viewport.scrollTop - state.rowIndex.get(anchorRow.key) * rowHeight : 0;
    state.items = [...fresh.map(remember), ...state.items].sort((a, b) => (sortsBefore(a, b) ? -1 : 1));
    rebuildRows();
    if (anchorRow && state.rowIndex.has(anchorRow.key)) {
      viewport.scrollTop = state.rowIndex.get(anchorRow.key) * rowHeight + anchorOffset;
    }
    const newest = fresh[0];
    const text =
      fresh.length === 1
        ? `New message from ${personName(newest.sender) || "someone"}: ${newest.subject || "(no subject)"}`
        : `${plural(fresh.length, "new message")} in ${folderLabel(mailbox)}.`;
    toast(text);
  });

  window.addEventListener("popstate", () => {
    if (app.dataset.view === "message" && !(history.state && history.state.mailView)) showList();
  });

  // ---------------------------------------------------------------------------------------
  // Start
  // ---------------------------------------------------------------------------------------

  measureRow();
  renderTree();
  updateListHeader();
  updateServerOption();
  (async () => {
    const order = start.account ? [start.account, ...state.accounts.map((a) => a.id).filter((id) => id !== start.account)] : state.accounts.map((a) => a.id);
    await Promise.all(order.map((id) => loadMailboxes(id).catch(() => state.mailboxesLoaded.add(id))));
    renderTree();
    chooseStartMailbox();
    checkStartJob();
    if (start.message) {
      const token = ++reader.token;
      try {
        const detail = await api(`mail/messages/${start.message}/`, { quiet: true });
        if (token !== reader.token) return;
        reader.messages = [remember(stripBody(detail))];
        reader.expanded = detail.id;
        reader.detail = withoutBody(detail);
        reader.rowKey = "m" + detail.id;
        state.cursorKey = "m" + detail.id;
        state.openKey = "m" + detail.id;
        renderReader();
        showMessageView();
        scheduleRender();
      } catch (error) {
        /* a message that is gone: just the list */
      }
    }
  })();
  setView("list");
})();
