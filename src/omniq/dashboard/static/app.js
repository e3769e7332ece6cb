// OmniQ dashboard: live refresh without a page reload, and confirmation of actions.
// Shipped in the package: no build step, no CDN.
(function () {
  "use strict";
  var every = Number(document.body.dataset.refresh || 0);

  // Re-fetch this page and swap its #live part in. The server escaped every value; the new
  // part is parsed inert (DOMParser runs no script) and only replaces the old one.
  async function refresh() {
    if (document.hidden || document.querySelector("#live :focus")) return;
    try {
      var res = await fetch(location.href, { credentials: "same-origin" });
      if (!res.ok) return;
      var doc = new DOMParser().parseFromString(await res.text(), "text/html");
      var fresh = doc.getElementById("live");
      var current = document.getElementById("live");
      if (fresh && current) current.replaceWith(document.importNode(fresh, true));
      document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
    } catch (e) {
      /* the next tick tries again */
    }
  }
  if (every > 0) setInterval(refresh, every * 1000);

  // Every action form asks first (its data-confirm text).
  document.addEventListener("submit", function (event) {
    var question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
