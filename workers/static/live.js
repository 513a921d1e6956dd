// Live updates for a conversation's page: poll its small JSON progress record and
// reload the page when a turn is added or stored. Polls every second while a turn
// runs; a live conversation (more questions may come) is polled every 5 seconds.
(function () {
  "use strict";
  var progress = document.getElementById("progress");
  if (!progress) {
    return;
  }
  var seen = progress.dataset.turns + "/" + progress.dataset.stored;
  var live = progress.dataset.live === "true";

  function schedule(running) {
    if (running) {
      window.setTimeout(poll, 1000);
    } else if (live) {
      window.setTimeout(poll, 5000);
    }
  }

  function poll() {
    fetch(progress.dataset.progress, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (state) {
        if (state === null) {
          schedule(true);  // a blip (server restarting): keep trying, more slowly is not worth the code
        } else if (state.turns + "/" + state.stored !== seen) {
          window.location.reload();
        } else {
          schedule(state.running);
        }
      })
      .catch(function () { schedule(true); });
  }

  schedule(progress.dataset.running === "true");
}());
