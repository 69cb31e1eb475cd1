// Delivery failures, on every page: when the outbox gives up on a message (an `outbox.state`
// event with state "failed", from static/js/events.js), a notice says so with the server's
// words and a link to the outbox, until it is dismissed (it survives page loads: kept in
// localStorage); and a badge next to Mail counts the failed messages (first from the API).
// A failure that happened while no page was open is announced on the next page load: the
// ids of the failed messages already known are kept too (the first visit just learns them).
(function () {
  "use strict";

  const { el } = window.Satchel;

  const STORE_KEY = "satchel.notices.failed";
  const KNOWN_KEY = "satchel.notices.known";
  const script = document.currentScript;
  const OUTBOX_URL = (script && script.dataset.outboxUrl) || "/mail/outbox/";
  const OUTBOX_API = (script && script.dataset.outboxApi) || "/api/v1/mail/outbox/";
  const PAGE = 100; // failed messages counted exactly; beyond that the badge says "100+"
  const failed = new Set(); // ids of the failed messages counted in the badge
  let more = false;

  function read(key) {
    try {
      const value = JSON.parse(localStorage.getItem(key));
      return Array.isArray(value) ? value : null;
    } catch (error) {
      return null;
    }
  }

  function write(key, list) {
    try {
      localStorage.setItem(key, JSON.stringify(list));
    } catch (error) {
      /* private mode: notices last as long as the page */
    }
  }

  const stored = () => read(STORE_KEY) || [];
  const store = (list) => write(STORE_KEY, list.slice(-20));

  function learn(id) {
    const known = read(KNOWN_KEY) || [];
    if (!known.includes(id)) write(KNOWN_KEY, [...known, id].slice(-PAGE));
  }

  // The badge ---------------------------------------------------------------------------

  function badge() {
    let node = document.getElementById("nav-failed");
    if (node) return node;
    const nav = document.querySelector(".topbar .nav");
    if (!nav) return null;
    node = el("a", { id: "nav-failed", class: "nav-failed", href: OUTBOX_URL, hidden: "" });
    const mail = [...nav.querySelectorAll("a")].find((a) => new URL(a.href, location.href).pathname === "/mail/");
    if (mail) mail.after(node);
    else nav.append(node);
    return node;
  }

  function renderBadge() {
    const node = badge();
    if (!node) return;
    const count = failed.size;
    node.hidden = count === 0;
    const shown = more ? `${PAGE}+` : String(count);
    node.textContent = shown;
    const label = `${shown} message${count === 1 && !more ? "" : "s"} could not be delivered: open the outbox`;
    node.title = label;
    node.setAttribute("aria-label", label);
  }

  async function loadCount() {
    let data;
    try {
      data = await window.Satchel.api(`${OUTBOX_API}?state=failed&page_size=${PAGE}`, { quiet: true });
    } catch (error) {
      return; // no count is better than a wrong one; events still update it
    }
    const list = data.results || [];
    list.forEach((message) => failed.add(message.id));
    more = Boolean(data.next);
    renderBadge();
    const known = read(KNOWN_KEY);
    if (known) list.filter((message) => !known.includes(message.id)).forEach((message) => announce(message, message));
    write(KNOWN_KEY, list.map((message) => message.id));
  }

  // Notices -----------------------------------------------------------------------------

  function box() {
    let node = document.getElementById("notices");
    if (!node) {
      node = el("div", { id: "notices", class: "notices", role: "region", "aria-label": "Delivery problems" });
      document.body.append(node);
    }
    return node;
  }

  function dismiss(id) {
    store(stored().filter((notice) => notice.id !== id));
    const node = document.querySelector(`.notice[data-message-id="${id}"]`);
    if (node) node.remove();
  }

  function render(notice) {
    if (document.querySelector(`.notice[data-message-id="${notice.id}"]`)) return;
    const close = el("button", { type: "button", class: "notice-close", "aria-label": "Dismiss", title: "Dismiss", text: "✕" });
    close.addEventListener("click", () => dismiss(notice.id));
    const about = [notice.subject ? `“${notice.subject}”` : "", notice.to ? `to ${notice.to}` : ""].filter(Boolean).join(" ");
    const node = el(
      "div",
      { class: "notice failed", role: "alert", "data-message-id": String(notice.id) },
      el("div", { class: "notice-body" }, el("strong", { class: "notice-title", text: "Your message could not be delivered" }), about ? el("p", { class: "notice-about", text: about }) : null, notice.reason ? el("p", { class: "notice-reason", text: notice.reason }) : null, el("a", { class: "notice-link", href: OUTBOX_URL, text: "Open the outbox" })),
      close
    );
    box().append(node);
  }

  async function announce(message, known) {
    let full = known || message;
    if (!known) {
      try {
        full = await window.Satchel.api(`${OUTBOX_API}${message.id}/`, { quiet: true });
      } catch (error) {
        /* the event's own fields are enough */
      }
    }
    learn(message.id);
    const people = [...(full.to || []), ...(full.cc || []), ...(full.bcc || [])].map((p) => (typeof p === "string" ? p : p.email || p.name));
    const notice = { id: message.id, subject: full.subject || "", to: people.join(", "), reason: message.last_error || full.last_error || "" };
    store([...stored().filter((n) => n.id !== notice.id), notice]);
    render(notice);
  }

  document.addEventListener("satchel:outbox.state", (event) => {
    const message = event.detail && event.detail.message;
    if (!message) return;
    if (message.state === "failed") {
      if (!failed.has(message.id)) {
        failed.add(message.id);
        renderBadge();
        announce(message);
      }
    } else if (failed.delete(message.id)) {
      renderBadge(); // sent again or cancelled: no longer failed
      dismiss(message.id);
    }
  });

  function start() {
    if (document.body.dataset.authenticated !== "true" || !document.querySelector(".topbar")) return;
    stored().forEach(render);
    loadCount();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
