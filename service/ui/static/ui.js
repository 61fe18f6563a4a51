// The moderator page: keyboard shortcuts, decisions over fetch, new items by polling.
// Comment text only ever reaches the page as server-escaped HTML or through textContent.
"use strict";

(() => {
  const help = document.getElementById("help");
  const toast = document.getElementById("toast");
  const list = document.getElementById("cards");
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const view = document.body.dataset.view || "needs_reply";
  const pollMs = Number(document.body.dataset.pollSeconds || "5") * 1000;
  const VIEWS = { 1: "needs_reply", 2: "flagged", 3: "hidden", 4: "all" };
  const RESOLVING = new Set(["approve", "hide", "reject", "reply"]);
  const PAST = {
    approve: "Approved", hide: "Hidden", reject: "Rejected", reply: "Replied to",
    escalate: "Escalated", relabel: "Relabelled",
  };
  const decided = new Set();
  let current = 0;
  let inFlight = 0;

  function say(message, isError) {
    toast.textContent = message;
    toast.classList.toggle("error", Boolean(isError));
  }

  function toggleHelp(show) {
    help.hidden = show === undefined ? !help.hidden : !show;
  }

  document.addEventListener("keydown", (event) => {
    if (!list && (event.key === "?" || (event.key === "Escape" && !help.hidden))) {
      toggleHelp(event.key === "?" ? undefined : false);
      event.preventDefault();
    }
  });
  if (!list) return;

  const cards = () => Array.from(list.querySelectorAll(".card:not(.pending)"));
  const currentCard = () => cards()[current];
  const selected = () => cards().filter((card) => card.querySelector(".select").checked);

  function focusCard(index) {
    const all = cards();
    document.getElementById("empty").hidden = all.length > 0;
    if (!all.length) {
      current = 0;
      return;
    }
    current = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((card, i) => card.classList.toggle("current", i === current));
    all[current].focus({ preventScroll: true });
    all[current].scrollIntoView({ block: "nearest" });
  }

  function updateCounts(counts) {
    for (const [name, count] of Object.entries(counts || {})) {
      const element = document.querySelector(`[data-count="${name}"]`);
      if (element) element.textContent = String(count);
    }
  }

  async function postDecisions(decisions) {
    const response = await fetch("/ui/decisions", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ decisions }),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = data.error ? data.error.message : (data.detail ? JSON.stringify(data.detail) : "");
      throw new Error(detail || `the server answered ${response.status}`);
    }
    return data;
  }

  // Resolving actions take the card off the page at once (the moderator moves on) and put it
  // back, with the server's reason, if the decision fails.
  async function decide(targets, action, extra) {
    if (!targets.length) return;
    const first = cards().indexOf(targets[0]);
    const resolving = RESOLVING.has(action);
    if (resolving) {
      for (const card of targets) {
        card.classList.add("pending");
        card.hidden = true;
      }
      focusCard(first);
    }
    inFlight += 1;
    try {
      const data = await postDecisions(
        targets.map((card) => ({ id: Number(card.dataset.id), action, ...(extra || {}) })),
      );
      for (const card of targets) {
        if (resolving) {
          remember(card.dataset.id);
          card.remove();
        } else {
          card.querySelector(".select").checked = false;
          if (action === "escalate") card.classList.add("escalated");
          closeEditors(card);
        }
      }
      updateCounts(data.counts);
      const n = data.decided.length;
      say(`${PAST[action]} ${n} comment${n === 1 ? "" : "s"}.`);
      if (!resolving) focusCard(first + 1);
    } catch (error) {
      for (const card of targets) {
        card.classList.remove("pending");
        card.hidden = false;
      }
      focusCard(cards().indexOf(targets[0]));
      say(`Nothing was changed: ${error.message}`, true);
    } finally {
      inFlight -= 1;
    }
    if (cards().length < 10) refresh();
  }

  // Decided ids, so that a poll answered just before a decision landed cannot bring the card back.
  function remember(id) {
    decided.add(id);
    if (decided.size > 500) decided.delete(decided.values().next().value);
  }

  function act(action) {
    const chosen = selected();
    const targets = chosen.length ? chosen : [currentCard()].filter(Boolean);
    decide(targets, action);
  }

  function closeEditors(card) {
    for (const element of (card || list).querySelectorAll(".reply, .relabel")) element.hidden = true;
  }

  function openReply(card) {
    if (!card) return;
    closeEditors(card);
    const section = card.querySelector(".reply");
    if (!section) return;
    section.hidden = false;
    const text = section.querySelector("textarea");
    text.focus();
    text.setSelectionRange(text.value.length, text.value.length);
  }

  function sendReply(card) {
    const section = card.querySelector(".reply");
    const replyText = section.querySelector("textarea").value.trim();
    if (!replyText) {
      say("Write a reply first.", true);
      return;
    }
    const extra = { reply_text: replyText };
    if (section.dataset.templateId) extra.template_id = Number(section.dataset.templateId);
    decide([card], "reply", extra);
  }

  function openRelabel(card) {
    if (!card) return;
    closeEditors(card);
    const form = card.querySelector(".relabel");
    if (!form) return;
    form.hidden = false;
    form.querySelector("select").focus();
  }

  function sendRelabel(card) {
    const labels = {};
    for (const select of card.querySelectorAll(".relabel select")) {
      if (select.value !== select.dataset.current) labels[select.name] = select.value;
    }
    if (!Object.keys(labels).length) {
      say("No label was changed.", true);
      return;
    }
    decide([card], "relabel", { labels });
  }

  // "Why?": the server scores the comment without each word and marks the words behind its
  // labels; the fragment is server-escaped HTML, so the comment's text stays text.
  async function explain(card) {
    if (!card || card.dataset.explained) return;
    card.dataset.explained = "pending";
    try {
      const response = await fetch(`/ui/comments/${card.dataset.id}/explain`, {
        credentials: "same-origin",
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(data.error ? data.error.message : `the server answered ${response.status}`);
      const text = card.querySelector(".text");
      text.insertAdjacentHTML("afterend", data.html);
      text.remove();
      card.dataset.explained = "done";
      say(data.highlighted ? "Highlighted the words behind the scores." : "No single word stands out.");
    } catch (error) {
      delete card.dataset.explained;
      say(`Could not explain: ${error.message}`, true);
    }
  }

  async function refresh() {
    const shown = Array.from(list.querySelectorAll(".card"), (card) => card.dataset.id).join(",");
    try {
      const url = `/ui/queue/cards?view=${encodeURIComponent(view)}&shown=${shown}`;
      const response = await fetch(url, { credentials: "same-origin" });
      if (response.status === 401) {
        say("Your session ended: reload the page to sign in again.", true);
        return;
      }
      if (!response.ok) return;
      const data = await response.json();
      updateCounts(data.counts);
      let added = 0;
      for (const card of data.cards) {
        if (document.getElementById(`c${card.id}`) || decided.has(String(card.id))) continue;
        list.insertAdjacentHTML("beforeend", card.html);
        added += 1;
      }
      if (added) {
        if (cards().length === added) focusCard(0);
        document.getElementById("empty").hidden = true;
      }
    } catch (error) {
      // The next poll tries again; the moderator keeps working on what is shown.
    }
  }

  list.addEventListener("click", (event) => {
    const card = event.target.closest(".card");
    if (!card) return;
    const index = cards().indexOf(card);
    if (index !== current) focusCard(index);
    const button = event.target.closest("button");
    if (!button) return;
    if (button.dataset.action === "reply") openReply(card);
    else if (button.dataset.action === "relabel") openRelabel(card);
    else if (button.dataset.action) decide([card], button.dataset.action);
    else if (button.classList.contains("why")) explain(card);
    else if (button.classList.contains("send-reply")) sendReply(card);
    else if (button.classList.contains("cancel")) closeEditors(card);
    else if (button.classList.contains("use-suggestion")) {
      const section = card.querySelector(".reply");
      section.querySelector("textarea").value = button.dataset.text;
      section.dataset.templateId = button.dataset.templateId;
      section.querySelector("textarea").focus();
    }
  });

  list.addEventListener("submit", (event) => {
    event.preventDefault();
    sendRelabel(event.target.closest(".card"));
  });

  for (const button of document.querySelectorAll("[data-bulk]")) {
    button.addEventListener("click", () => {
      const chosen = selected();
      if (!chosen.length) say("Select comments first (x, or the check boxes).", true);
      else decide(chosen, button.dataset.bulk);
    });
  }

  document.getElementById("select-all").addEventListener("change", (event) => {
    for (const box of list.querySelectorAll(".select")) box.checked = event.target.checked;
  });

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target.matches("textarea, select, input:not([type=checkbox])")) {
      const card = target.closest(".card");
      if (event.key === "Escape") {
        closeEditors(card);
        if (card) card.focus();
        event.preventDefault();
      } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && card) {
        if (target.matches("textarea")) sendReply(card);
        else sendRelabel(card);
        event.preventDefault();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const card = currentCard();
    switch (event.key) {
      case "j": focusCard(current + 1); break;
      case "k": focusCard(current - 1); break;
      case "a": act("approve"); break;
      case "h": act("hide"); break;
      case "d": act("reject"); break;
      case "e": act("escalate"); break;
      case "r": openReply(card); break;
      case "l": openRelabel(card); break;
      case "x":
        if (card) card.querySelector(".select").checked = !card.querySelector(".select").checked;
        break;
      case "w": explain(card); break;
      case "o": if (card) window.location.assign(`/ui/comments/${card.dataset.id}`); break;
      case "?": toggleHelp(); break;
      case "Escape": toggleHelp(false); closeEditors(); break;
      case "1": case "2": case "3": case "4":
        window.location.assign(`/ui/queue?view=${VIEWS[event.key]}`);
        break;
      default: return;
    }
    event.preventDefault();
  });

  focusCard(0);
  window.setInterval(() => { if (!inFlight && !document.hidden) refresh(); }, pollMs);
})();
