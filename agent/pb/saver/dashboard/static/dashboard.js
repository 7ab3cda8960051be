// cellar fleet dashboard: live refresh of <main> by polling the same page (server-rendered HTML).
// Everything works without this script; it only keeps the tables and charts current.
"use strict";
(function () {
  const main = document.getElementById("live");
  if (!main) return;
  const seconds = parseInt(main.dataset.refresh || "0", 10);
  if (!(seconds > 0)) return;
  async function refresh() {
    const active = document.activeElement;
    if (active && active.closest && active.closest("form")) return; // the user is typing a filter
    try {
      const reply = await fetch(window.location.href, {credentials: "same-origin", cache: "no-store",
                                                        headers: {"X-Cellar-Refresh": "1"}});
      if (!reply.ok) return;
      const page = new DOMParser().parseFromString(await reply.text(), "text/html");
      const fresh = page.getElementById("live");
      if (fresh) {
        main.replaceChildren(...Array.from(fresh.childNodes).map((n) => document.importNode(n, true)));
        main.dataset.refreshed = String(Date.now());
      }
    } catch (e) {
      // the saver is restarting or the network dropped: try again at the next tick
    }
  }
  window.setInterval(refresh, seconds * 1000);
})();
