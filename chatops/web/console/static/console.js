/* chatops operator console: progressive enhancement only (every page works without it).
   - Live updates: elements with data-live="URL" are refreshed from that URL (an HTML fragment) every few seconds;
     the inbox's X-Waiting-Count header updates the badge and the title.
   - Keyboard: j = next waiting conversation, / = focus the reply box, Ctrl/Cmd+Enter = send, g = inbox. */
(function () {
  "use strict";
  var PERIOD = 3000;

  function setWaiting(count) {
    var badge = document.getElementById("waiting-count");
    if (badge) badge.textContent = count;
    document.title = document.title.replace(/^\(\d+\) /, "");
    if (count !== "0" && document.getElementById("inbox-rows")) document.title = "(" + count + ") " + document.title;
  }

  function refresh(element) {
    var url = element.getAttribute("data-live");
    fetch(url, { headers: { "X-Console-Fragment": "1" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        if (!response.ok) return null;
        var count = response.headers.get("X-Waiting-Count");
        if (count !== null) setWaiting(count);
        return response.text();
      })
      .then(function (html) {
        if (html === null || html === undefined || element.getAttribute("data-html") === html) return;
        var openTraces = Array.prototype.map.call(element.querySelectorAll("details[open]"), function (d) {
          var li = d.closest("li"); return li ? li.getAttribute("data-id") : null;
        });
        var thread = element.querySelector("ol.thread");
        var atBottom = thread ? thread.scrollHeight - thread.scrollTop - thread.clientHeight < 40 : false;
        element.innerHTML = html;
        element.setAttribute("data-html", html);
        openTraces.forEach(function (id) {
          var d = id && element.querySelector('li[data-id="' + id + '"] details');
          if (d) d.open = true;
        });
        var newThread = element.querySelector("ol.thread");
        if (newThread && atBottom) newThread.scrollTop = newThread.scrollHeight;
      })
      .catch(function () { /* offline for a moment: the next round tries again */ });
  }

  function start() {
    var live = document.querySelectorAll("[data-live]");
    Array.prototype.forEach.call(live, function (element) {
      setInterval(function () { if (!document.hidden) refresh(element); }, PERIOD);
    });
    var thread = document.querySelector("ol.thread");
    if (thread) thread.scrollTop = thread.scrollHeight;

    document.addEventListener("keydown", function (event) {
      var target = event.target;
      var typing = target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.tagName === "SELECT");
      if (typing) {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target.form) {
          event.preventDefault();
          target.form.requestSubmit ? target.form.requestSubmit() : target.form.submit();
        }
        if (event.key === "Escape") target.blur();
        return;
      }
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key === "j") {
        var next = document.querySelector("a.conversation-link.waiting");
        if (next) window.location.href = next.href;
        else window.location.href = document.querySelector("a.brand").href;
      } else if (event.key === "/") {
        var box = document.getElementById("reply-text") || document.getElementById("send");
        if (box) { event.preventDefault(); box.focus(); }
      } else if (event.key === "g") {
        window.location.href = document.querySelector("a.brand").href;
      }
    });
    var help = document.getElementById("shortcuts-help");
    if (help) help.addEventListener("click", function (event) { event.preventDefault(); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
