// Live pages: a page whose <body data-live-socket="/ws/..."> names a stream opens that
// websocket and applies what the server sends (live/sockets.py), by id:
//   {"page": html}                 the whole page as a GET gets it (on every (re)connect):
//                                  each element marked data-live-region="name" is swapped in;
//   {"rows": {id: html}}           the row marked data-live-id="id" is replaced;
//   {"lists": {name: [ids]}}       the element marked data-live-list="name" holds those rows,
//                                  in that order: rows are moved, inserted, removed;
//   {"regions": {name: html}}      that region's inside is replaced.
// A list naming a row the page has not got (it lost track) asks for the whole page again.
// The page itself works without any of this: with the socket down it says so and stays a
// page you can reload.
(function () {
  "use strict";
  const path = document.body.dataset.liveSocket;
  if (!path) return;
  const banner = document.getElementById("live-status");
  let delay = 500; // reconnect backoff, doubled up to 10 s

  const byAttribute = (name, value) => `[${name}="${CSS.escape(value)}"]`;

  function element(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }

  function swapPage(html) {
    const fresh = new DOMParser().parseFromString(html, "text/html");
    for (const region of document.querySelectorAll("[data-live-region]")) {
      const next = fresh.querySelector(byAttribute("data-live-region", region.dataset.liveRegion));
      if (next && next.innerHTML !== region.innerHTML) region.innerHTML = next.innerHTML;
    }
  }

  // Applies a frame of parts; false if a list names a row this page does not have.
  function applyParts(frame) {
    const detached = new Map(); // rows sent for a list they are not in yet, or taken out of one
    for (const [id, html] of Object.entries(frame.rows || {})) {
      const next = element(html);
      const current = document.querySelector(byAttribute("data-live-id", id));
      if (current) current.replaceWith(next);
      else detached.set(id, next);
    }
    for (const [name, html] of Object.entries(frame.regions || {})) {
      const region = document.querySelector(byAttribute("data-live-region", name));
      if (region && region.innerHTML !== html) region.innerHTML = html;
    }
    let complete = true;
    const lists = Object.entries(frame.lists || {})
      .map(([name, ids]) => [document.querySelector(byAttribute("data-live-list", name)), ids])
      .filter(([list]) => list);
    for (const [list, ids] of lists) { // first out of every list, so a row can move between lists
      const wanted = new Set(ids);
      for (const row of list.querySelectorAll(":scope > [data-live-id]")) {
        if (!wanted.has(row.dataset.liveId)) { detached.set(row.dataset.liveId, detached.get(row.dataset.liveId) || row); row.remove(); }
      }
    }
    for (const [list, ids] of lists) {
      let expected = list.firstElementChild; // rows already in place are not touched
      for (const id of ids) {
        const row = detached.get(id) || document.querySelector(byAttribute("data-live-id", id));
        if (!row) { complete = false; continue; }
        detached.delete(id);
        if (row === expected) expected = expected.nextElementSibling;
        else list.insertBefore(row, expected);
      }
      const placeholder = list.querySelector(":scope > [data-live-placeholder]");
      if (placeholder) placeholder.hidden = ids.length > 0;
    }
    return complete;
  }

  function connect() {
    const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`);
    socket.addEventListener("open", () => {
      delay = 500;
      banner.hidden = true;
      document.body.dataset.live = "open";
    });
    socket.addEventListener("message", (event) => {
      const frame = JSON.parse(event.data);
      if (typeof frame.page === "string") swapPage(frame.page);
      else if (!applyParts(frame)) socket.send(JSON.stringify({ want: "page" }));
      document.dispatchEvent(new CustomEvent("foodsite:refreshed"));
    });
    socket.addEventListener("close", () => {
      // Dropped, refused at the handshake or closed by the server (logged out): retry,
      // slower and slower.
      document.body.dataset.live = "closed";
      banner.hidden = false;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    });
  }

  connect();
})();
