// The conversation list, live: every few seconds it asks for the rows it shows (the same
// filters and page, GET /conversations.json) and swaps them in when a conversation was added
// or a turn asked or stored. No reload, so the filters and the chat box keep what was typed.
(function () {
  "use strict";
  var table = document.getElementById("conversations");
  if (!table) {
    return;
  }
  var EVERY_MS = 3000;

  function poll() {
    fetch(table.dataset.rows, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (state) {
        if (state !== null && state.signature !== table.dataset.signature) {
          table.tBodies[0].innerHTML = state.rows;
          table.dataset.signature = state.signature;
          table.hidden = state.total === 0;
          document.getElementById("total").textContent = String(state.total);
          var empty = document.getElementById("no-conversations");
          if (empty && state.total > 0) { empty.remove(); }
        }
      })
      .catch(function () {})  // the server restarting: the next poll tries again
      .then(function () { window.setTimeout(poll, EVERY_MS); });
  }

  window.setTimeout(poll, EVERY_MS);
}());
