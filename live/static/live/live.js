// Live pages: a page whose <body data-live-socket="/ws/..."> names a stream opens that
// websocket; each notice ("this stream changed") brings the page as the server just read it
// for this browser (foodsite/sockets.py), or, when it could not, makes us re-fetch it; either
// way every element marked data-live-region="name" is swapped in. The page itself works
// without any of this: with the socket down it says so and stays a page you can reload.
(function () {
  "use strict";
  const path = document.body.dataset.liveSocket;
  if (!path) return;
  const banner = document.getElementById("live-status");
  let delay = 500;          // reconnect backoff, doubled up to 10 s
  let refreshing = null;    // the refresh under way, if any
  let again = false;        // a notice came during it: refresh once more after

  function swapRegions(html) {
    const fresh = new DOMParser().parseFromString(html, "text/html");
    for (const region of document.querySelectorAll("[data-live-region]")) {
      const name = region.dataset.liveRegion;
      const next = fresh.querySelector(`[data-live-region="${CSS.escape(name)}"]`);
      if (next && next.innerHTML !== region.innerHTML) region.innerHTML = next.innerHTML;
    }
    document.dispatchEvent(new CustomEvent("foodsite:refreshed"));
  }

  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = (async () => {
      do {
        again = false;
        const response = await fetch(location.href, { credentials: "same-origin", headers: { "X-Live-Refresh": "1" } });
        if (!response.ok) break;
        swapRegions(await response.text());
      } while (again);
    })();
    try { await refreshing; } catch (error) { console.warn("live refresh failed", error); } finally { refreshing = null; }
  }

  function connect() {
    const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`);
    socket.addEventListener("open", () => {
      delay = 500;
      banner.hidden = true;
      document.body.dataset.live = "open";
      // Notices sent before this socket joined (between the page's render and now, or
      // while it was away) are gone: re-read once.
      refresh();
    });
    socket.addEventListener("message", (event) => {
      const notice = JSON.parse(event.data);
      if (typeof notice.page !== "string") { refresh(); return; }
      swapRegions(notice.page);
      // A re-fetch under way may answer with an older page than this one: read once more.
      if (refreshing) again = true;
    });
    socket.addEventListener("close", () => {
      // Dropped, or refused at the handshake (logged out): retry, slower and slower.
      document.body.dataset.live = "closed";
      banner.hidden = false;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    });
  }

  connect();
})();
