// Heex console: clipboard copy, confirmations, the forms that reveal a secret once, and the
// parts of a page that refresh themselves (connected devices).
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

  // A GET of this console's own pages; a session that ended is redirected to sign-in: go.
  function get(url, accept) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": accept } }).then(function (r) {
      if (r.redirected) {
        window.location.assign(r.url);
        throw new Error("Your session ended; sign in again.");
      }
      if (!r.ok) { throw new Error("The request failed (" + r.status + ")."); }
      return r;
    });
  }

  // After the commands are shown: wait for a device enrolled with the key to connect.
  var waitTimer = null;
  function waitForDevice(keyId) {
    var status = $("wait-status");
    if (!status) { return; }
    if (waitTimer) { clearInterval(waitTimer); }
    var url = "/console/add-device/wait?key=" + encodeURIComponent(keyId) +
      "&since=" + encodeURIComponent(status.getAttribute("data-since"));
    waitTimer = setInterval(function () {
      if (document.hidden) { return; }
      get(url, "application/json").then(function (r) { return r.json(); }).then(function (b) {
        var d = b.devices && b.devices[0];
        if (!d) { return; }
        var link = document.createElement("a");
        link.href = d.href;
        link.textContent = d.name;
        status.replaceChildren(link, document.createTextNode(
          d.connected ? " connected." : " enrolled; waiting for it to connect…"));
        if (d.connected) {
          status.className = "connected";
          clearInterval(waitTimer);
          waitTimer = null;
        }
      }).catch(function () {});
    }, 2000);
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
      waitForDevice(select.value);
    }, function (e) { showError(e.message); });
  }

  // The question a form asks before it is sent, or null. `data-confirm-when="field=value"`
  // asks only when that field has that value; `{n}` is the number of selected boxes.
  function confirmation(form, selected) {
    var question = form.getAttribute("data-confirm");
    var when = form.getAttribute("data-confirm-when");
    if (question && when) {
      var kv = when.split("=");
      var field = form.elements[kv[0]];
      if (!field || field.value !== kv[1]) { question = null; }
    }
    return question && question.replace("{n}", String(selected));
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var need = form.getAttribute("data-need-selection");
    var selected = need ? document.querySelectorAll(
      "input[name=" + need + "][form=" + form.id + "]:checked").length : 0;
    if (need && selected === 0) {
      ev.preventDefault();
      showError("Select at least one device first (the boxes in the first column).");
      return;
    }
    var question = confirmation(form, selected);
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

  document.addEventListener("change", function (ev) {
    var all = ev.target.closest("input[data-select-all]");
    if (!all) { return; }
    document.querySelectorAll("input[type=checkbox][name=" + all.getAttribute("data-select-all") + "]")
      .forEach(function (box) { box.checked = all.checked; });
  });

  // Live parts: an element with data-live-src is refreshed from that URL every few seconds
  // while the page is visible. Rows (data-live-rows) keep focus and selection: when the same
  // rows come back, only their data-live cells (none of which holds a control) change;
  // otherwise the rows are replaced and ticked boxes stay ticked.
  function rowIds(root) {
    return Array.prototype.map.call(root.querySelectorAll("tr"), function (r) {
      return r.getAttribute("data-id") || "";
    }).join(" ");
  }

  function refreshRows(tbody, fragment) {
    var counts = fragment.querySelector("#device-counts");
    var shown = $("device-counts");
    if (counts && shown && shown.innerHTML !== counts.innerHTML) { shown.innerHTML = counts.innerHTML; }
    var fresh = fragment.querySelector("tbody");
    if (!fresh) { return; }
    if (rowIds(tbody) === rowIds(fresh)) {
      var was = tbody.querySelectorAll("tr");
      fresh.querySelectorAll("tr").forEach(function (row, i) {
        var old = was[i].querySelectorAll("td[data-live]");
        row.querySelectorAll("td[data-live]").forEach(function (cell, j) {
          if (old[j] && old[j].innerHTML !== cell.innerHTML) { old[j].innerHTML = cell.innerHTML; }
        });
      });
      return;
    }
    var ticked = {};
    tbody.querySelectorAll("input[type=checkbox]:checked").forEach(function (b) { ticked[b.value] = true; });
    fresh.querySelectorAll("input[type=checkbox]").forEach(function (b) { b.checked = !!ticked[b.value]; });
    tbody.replaceChildren.apply(tbody, Array.prototype.slice.call(fresh.children));
  }

  document.querySelectorAll("[data-live-src]").forEach(function (el) {
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) { return; }
      busy = true;
      get(el.getAttribute("data-live-src"), "text/html").then(function (r) { return r.text(); })
        .then(function (text) {
          var t = document.createElement("template");
          t.innerHTML = text;
          if (el.hasAttribute("data-live-rows")) { refreshRows(el, t.content); return; }
          var fresh = t.content.firstElementChild;
          if (fresh && el.innerHTML !== fresh.innerHTML) { el.innerHTML = fresh.innerHTML; }
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }, 3000);
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
