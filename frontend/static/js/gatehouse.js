// Live-update status for the htmx websocket extension. No inline script: the CSP forbids it.
(function () {
  "use strict";
  function setState(state, text) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.dataset.state = state;
    el.textContent = text;
  }
  document.addEventListener("htmx:wsOpen", function () { setState("open", "live"); });
  document.addEventListener("htmx:wsClose", function () { setState("closed", "offline, retrying…"); });
  document.addEventListener("htmx:wsError", function () { setState("closed", "offline, retrying…"); });
})();
