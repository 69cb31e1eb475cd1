// The REST API client the page scripts share: session auth with the CSRF header, JSON in
// and out. An error answer becomes an ApiError whose message is the server's `detail` (for
// a 502, the mail or FTP server's own words, plus the plain-words `explanation`), shown as a
// toast unless `quiet`. A lost session sends the page to the login screen.
(function () {
  "use strict";

  const csrfToken = (() => {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"];
    } catch (error) {
      return "";
    }
  })();

  function errorText(status, body) {
    if (!body || typeof body !== "object") return `The request failed (${status}).`;
    let detail = body.detail;
    if (!detail) {
      const first = Object.entries(body).find(([, value]) => Array.isArray(value) && value.length);
      detail = first ? String(first[1][0]) : `The request failed (${status}).`;
    }
    if (body.explanation && !String(detail).includes(body.explanation)) return `${detail} — ${body.explanation}`;
    return String(detail);
  }

  class ApiError extends Error {
    constructor(status, body) {
      super(errorText(status, body));
      this.status = status;
      this.body = body || {};
    }
  }

  function fail(failure, quiet) {
    if (!quiet && window.Satchel.toast) window.Satchel.toast(failure.message, "failed");
    throw failure;
  }

  async function api(url, { method = "GET", body, quiet = false } = {}) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") options.headers["X-CSRFToken"] = csrfToken;
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      fail(new ApiError(0, { detail: "Satchel could not be reached. Check your connection." }), quiet);
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (response.status === 401 || (response.status === 403 && data && data.code === "not_authenticated")) {
      // The session ended (logged out in another tab, expired): log in again, then come back.
      location.assign(`/login/?next=${encodeURIComponent(location.pathname + location.search)}`);
    }
    if (!response.ok) fail(new ApiError(response.status, data), quiet);
    return data;
  }

  window.Satchel = Object.assign(window.Satchel || {}, { api, ApiError, csrfToken });
})();
