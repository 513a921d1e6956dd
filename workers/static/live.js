// The conversation page, live. Follows a running turn through its server-sent events
// (GET .../turns/{i}/events: each candidate, then each ballot, then the decision) and draws
// each as it comes; once decided, swaps in the server's rendering of the whole turn. Posts
// the question box without leaving the page (a refused question stays in the box). One
// stream at a time, oldest running turn first: a browser opens few connections per server.
(function () {
  "use strict";
  var progress = document.getElementById("progress");
  var turns = document.getElementById("turns");
  if (!progress || !turns) {
    return;
  }
  var form = document.getElementById("ask");
  var following = null;

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }

  // What the section has shown, in order: the tests read it to check candidates came first.
  function mark(section, kind) {
    section.dataset.stages = section.dataset.stages ? section.dataset.stages + "," + kind : kind;
  }

  function replaceByKey(container, node, attribute, key) {
    var old = Array.prototype.find.call(container.children, function (child) {
      return child.getAttribute(attribute) === key;
    });
    if (old) { container.replaceChild(node, old); } else { container.appendChild(node); }
    var count = container.parentNode.querySelector('.live-count[data-of="' + container.dataset.of + '"]');
    if (count) { count.textContent = "(" + container.children.length + ")"; }
  }

  function showCandidate(section, event) {
    var record = event.record;
    var card = element("article", "candidate" + (record.error ? " failed" : ""));
    card.setAttribute("data-member", event.member);
    var header = element("header");
    header.appendChild(element("span", "member", event.member));
    header.appendChild(element("span", "muted seconds", Number(record.seconds || 0).toFixed(2) + " s"));
    card.appendChild(header);
    card.appendChild(record.error ? element("p", "error", record.error) : element("p", "text", record.text));
    var box = section.querySelector(".live-candidates");
    box.dataset.of = "candidate";
    replaceByKey(box, card, "data-member", event.member);  // a redelivered task: its newest record
  }

  function showBallot(section, event) {
    var record = event.record;
    var row = element("li", "live-ballot");
    row.setAttribute("data-reviewer", event.member);
    row.appendChild(element("span", "member", event.member));
    if (event.kind === "judgement") {
      var p = record.p_first;
      row.appendChild(document.createTextNode(" judged " + record.first + " vs " + record.second + ": " +
        (p === null || p === undefined ? "no judgement" : "P(" + record.first + ") = " + Number(p).toFixed(2))));
    } else {
      var ranking = record.ranking || [];
      row.appendChild(document.createTextNode(" (" + (record.method || "review") + "): " +
        (ranking.length ? ranking.join(" > ") : "no ballot") + " "));
      row.appendChild(element("span", "badge status-" + record.status, record.status));
    }
    if (record.error) { row.appendChild(element("div", "error", record.error)); }
    var list = section.querySelector(".live-ballots");
    list.dataset.of = "ballot";
    replaceByKey(list, row, "data-reviewer", event.member);
  }

  function showDecision(section, decision) {
    var box = section.querySelector(".live-decision");
    var pending = section.querySelector(".pending");
    if (pending) { pending.remove(); }
    var answer = element("div", "answer");
    answer.appendChild(element("h3", null, decision.chosen ? "Answer from " + decision.chosen : "Answer"));
    answer.appendChild(element("p", "answer-text", decision.answer || "(no answer)"));
    box.appendChild(answer);
    if (decision.ranked) {
      var bars = element("div", "bars scores");
      var top = Math.max.apply(null, Object.values(decision.scores).map(Math.abs).concat([1e-9]));
      decision.ranking.forEach(function (member) {
        if (!(member in decision.scores)) { return; }
        var score = decision.scores[member];
        var row = element("div", "bar-row" + (member === decision.chosen ? " chosen" : ""));
        row.appendChild(element("span", "member", member));
        var bar = element("span", "bar");
        var fill = element("span", "fill" + (score < 0 ? " negative" : ""));
        fill.style.width = (100 * Math.abs(score) / top).toFixed(1) + "%";
        bar.appendChild(fill);
        row.appendChild(bar);
        row.appendChild(element("span", "num", score.toFixed(2)));
        bars.appendChild(row);
      });
      box.appendChild(bars);
    }
    var why = element("ul", "explanation");
    (decision.explanation || []).forEach(function (sentence) { why.appendChild(element("li", null, sentence)); });
    box.appendChild(why);
  }

  // The server's rendering of the decided turn (ballot table, timings, raw texts) replaces the
  // live one; what the live one showed stays recorded on it.
  function swapIn(section) {
    return fetch(section.dataset.fragment, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var holder = document.createElement("div");
        holder.innerHTML = html;
        var fresh = holder.querySelector("section.turn");
        if (fresh) {
          fresh.dataset.stages = section.dataset.stages;
          section.replaceWith(fresh);
        }
      });
  }

  function follow(section) {
    following = section;
    var url = section.dataset.events + (section.dataset.after ? "?after=" + section.dataset.after : "");
    var source = new EventSource(url);
    function on(kind, draw) {
      source.addEventListener(kind, function (message) {
        var event = JSON.parse(message.data);
        section.dataset.after = String(event.id);
        mark(section, kind);
        draw(section, event);
      });
    }
    on("candidate", showCandidate);
    on("ballot", showBallot);
    on("judgement", showBallot);
    source.addEventListener("decision", function (message) {
      source.close();
      mark(section, "decision");
      showDecision(section, JSON.parse(message.data));
      section.dataset.running = "false";
      swapIn(section).catch(function () {}).then(function () {
        following = null;
        refreshProgress();
        followNext();
      });
    });
    source.addEventListener("timeout", function () {  // the server's bound: subscribe again
      source.close();
      following = null;
      followNext();
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {  // refused (a key, a lost turn): no retries
        following = null;
        var pending = section.querySelector(".pending");
        if (pending) { pending.textContent = "Lost the live view of this turn: reload the page."; }
      }
    };
  }

  function followNext() {
    if (following) { return; }
    var next = turns.querySelector('section.turn[data-running="true"]');
    if (next) { follow(next); }
  }

  function refreshProgress() {
    return fetch(progress.dataset.progress, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (state) {
        if (state === null) { return; }
        progress.querySelector(".counts").textContent =
          state.stored + " of " + state.turns + " turn" + (state.turns === 1 ? "" : "s") + " stored";
        var badge = progress.querySelector(".state");
        badge.textContent = state.running ? "running" : "finished";
        badge.className = "badge state " + (state.running ? "running" : "finished");
        var note = progress.querySelector(".note");
        if (note && !state.running) { note.remove(); }
      });
  }

  function ask(submit) {
    submit.preventDefault();
    var box = form.querySelector("textarea");
    var button = form.querySelector("button");
    var error = document.getElementById("ask-error");
    button.disabled = true;
    fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      headers: { Accept: "application/json" },
      credentials: "same-origin"
    })
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) { throw new Error(body.error || "refused (" + response.status + ")"); }
          return fetch(body.fragment, { credentials: "same-origin", cache: "no-store" });
        });
      })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        error.hidden = true;
        box.value = "";  // only now: a refused question stays in the box
        turns.insertAdjacentHTML("beforeend", html);
        var empty = document.querySelector("p.empty");
        if (empty) { empty.remove(); }
        refreshProgress();
        followNext();
      })
      .catch(function (failure) {
        error.textContent = failure.message;
        error.hidden = false;
      })
      .then(function () { button.disabled = false; });
  }

  if (form) { form.addEventListener("submit", ask); }
  followNext();
}());
