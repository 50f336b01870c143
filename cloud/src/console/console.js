// Heex console: clipboard copy, confirmations, and the forms that reveal a secret once.
// No framework, no inline script (the CSP allows only this file).
"use strict";
(function () {
  function $(id) { return document.getElementById(id); }

  function showError(message) {
    var p = $("form-error");
    if (!p) { window.alert(message); return; }
    p.textContent = message;
    p.hidden = false;
  }

  function clearError() {
    var p = $("form-error");
    if (p) { p.hidden = true; p.textContent = ""; }
  }

  // Posts a form to the server and resolves with its JSON answer. A request whose session
  // ended is redirected to the sign-in page: go there.
  function post(form, action) {
    return fetch(action || form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      headers: { "Accept": "application/json" },
      credentials: "same-origin"
    }).then(function (r) {
      var type = r.headers.get("content-type") || "";
      if (r.redirected || type.indexOf("application/json") < 0) {
        window.location.assign(r.url);
        throw new Error("Your session ended; sign in again.");
      }
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(body.message || ("The request failed (" + r.status + ").")); }
        return body;
      });
    });
  }

  // Starts a clipboard write now, inside the click that submitted the form, with text that
  // arrives later: Chromium and Safari keep the user gesture for a ClipboardItem whose value
  // is a promise. Elsewhere, write the text when it arrives.
  function copyLater(textPromise) {
    if (window.ClipboardItem && navigator.clipboard && navigator.clipboard.write) {
      try {
        var blob = textPromise.then(function (t) { return new Blob([t], { type: "text/plain" }); });
        return navigator.clipboard.write([new window.ClipboardItem({ "text/plain": blob })]);
      } catch (e) { /* fall back below */ }
    }
    return textPromise.then(function (t) { return navigator.clipboard.writeText(t); });
  }

  function revealSubmit(form) {
    clearError();
    var answer = post(form);
    var copied = copyLater(answer.then(function (b) { return b.secret; }));
    copied.catch(function () {});
    answer.then(function (b) {
      $("reveal-title").textContent = b.title;
      $("reveal-label").textContent = b.label;
      $("reveal-secret").value = b.secret;
      $("reveal-note").textContent = b.note;
      $("reveal-status").textContent = "Copying…";
      var more = $("reveal-continue");
      if (form.hasAttribute("data-manual")) {
        more.href = "/console/keys";
        more.textContent = "Continue to the console";
        form.hidden = true;
      } else {
        more.href = window.location.pathname + window.location.search;
        more.textContent = "Reload the list";
      }
      $("reveal").hidden = false;
      copied.then(function () {
        $("reveal-status").textContent = "Copied to the clipboard.";
      }, function () {
        $("reveal-status").textContent =
          "Your browser did not allow copying automatically: use the Copy button.";
      });
    }, function (e) { showError(e.message); });
  }

  function commandsSubmit(form) {
    clearError();
    var select = $("enroll-key");
    var action = select.getAttribute("data-action-template").replace("{ID}", encodeURIComponent(select.value));
    post(form, action).then(function (b) {
      document.querySelectorAll("[data-template]").forEach(function (el) {
        el.textContent = el.getAttribute("data-template").split("{KEY}").join(b.secret);
      });
      $("commands").hidden = false;
    }, function (e) { showError(e.message); });
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { ev.preventDefault(); return; }
    if (form.hasAttribute("data-reveal")) { ev.preventDefault(); revealSubmit(form); return; }
    if (form.hasAttribute("data-commands")) { ev.preventDefault(); commandsSubmit(form); }
  });

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest("button[data-copy]");
    if (!button) { return; }
    var el = $(button.getAttribute("data-copy"));
    var text = el.tagName === "INPUT" ? el.value : el.textContent;
    var done = function () { button.textContent = "Copied"; };
    navigator.clipboard.writeText(text).then(done, function () {
      if (el.tagName === "INPUT") { el.select(); } else {
        var range = document.createRange();
        range.selectNodeContents(el);
        var sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
      }
      if (document.execCommand("copy")) { done(); } else { button.textContent = "Press Ctrl+C"; }
    });
  });

  // A one-time token travels in the link's fragment (never sent to the server, never
  // logged): take it out of the address bar and into the form that posts it.
  document.querySelectorAll("form[data-fragment]").forEach(function (form) {
    var token = decodeURIComponent(window.location.hash.slice(1));
    if (window.location.hash) { window.history.replaceState(null, "", window.location.pathname); }
    var field = form.querySelector("[name=" + form.getAttribute("data-fragment") + "]");
    if (field) { field.value = token; }
    if (form.id === "link-form" && token) { form.submit(); }
  });
})();
