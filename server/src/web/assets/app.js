// FieldCRM office UI: small enhancements; every page works without them.
"use strict";
document.documentElement.classList.add("js");

// The browser's time zone, used for users who have not chosen one in their
// settings (the server checks the name against its tz database).
try {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (zone && /^[A-Za-z0-9_+\/-]+$/.test(zone)) {
    document.cookie = `fieldcrm_tz=${zone}; path=/; max-age=31536000; SameSite=Strict`;
  }
} catch (_) { /* no Intl: times stay in UTC */ }

document.addEventListener("DOMContentLoaded", () => {
  // Error pages: Back returns to where the user came from.
  for (const back of document.querySelectorAll("[data-back]")) {
    back.hidden = false;
    back.addEventListener("click", () => history.back());
  }

  // Record pickers: suggestions from /lookup as the user types; choosing
  // one stores its id beside the name box (and, for an account or what an
  // activity is about, its territory when none is chosen yet).
  for (const box of document.querySelectorAll("input[data-lookup]")) picker(box);

  // Ask before deleting.
  for (const form of document.querySelectorAll("form[action$='/delete']")) {
    form.addEventListener("submit", (e) => {
      if (!confirm("Delete this record? It can be restored later.")) e.preventDefault();
    });
  }

  // Pipeline board: changing a card's stage moves it at once; cards can
  // also be dragged onto another column.
  for (const select of document.querySelectorAll(".card form.move select")) {
    select.addEventListener("change", () => select.form.submit());
  }
  let dragged = null;
  for (const card of document.querySelectorAll(".card[draggable]")) {
    card.addEventListener("dragstart", (e) => {
      dragged = card;
      e.dataTransfer.setData("text/plain", card.dataset.id);
    });
  }
  for (const column of document.querySelectorAll(".board .stage")) {
    column.addEventListener("dragover", (e) => { e.preventDefault(); column.classList.add("over"); });
    column.addEventListener("dragleave", () => column.classList.remove("over"));
    column.addEventListener("drop", (e) => {
      e.preventDefault();
      column.classList.remove("over");
      if (!dragged) return;
      const select = dragged.querySelector("form.move select");
      if (select.value !== column.dataset.stage) {
        select.value = column.dataset.stage;
        select.form.submit();
      }
    });
  }
});

function picker(box) {
  const idField = box.previousElementSibling;
  const list = document.getElementById(box.getAttribute("aria-controls"));
  let items = [];
  let active = -1;
  let timer = null;
  let asked = 0;

  const close = () => {
    list.hidden = true;
    box.setAttribute("aria-expanded", "false");
    box.removeAttribute("aria-activedescendant");
    active = -1;
  };
  const highlight = (i) => {
    active = i;
    list.querySelectorAll("li").forEach((li, n) => li.setAttribute("aria-selected", String(n === i)));
    if (i >= 0) box.setAttribute("aria-activedescendant", `${list.id}-${i}`);
  };
  const choose = (s) => {
    idField.value = s.id;
    box.value = s.name;
    close();
    const territory = box.form.querySelector("select[name=territory]");
    if (territory && !territory.value && s.territory &&
        [...territory.options].some((o) => o.value === s.territory)) {
      territory.value = s.territory;
    }
  };
  const render = () => {
    list.replaceChildren(...items.map((s, i) => {
      const li = document.createElement("li");
      li.id = `${list.id}-${i}`;
      li.setAttribute("role", "option");
      const name = document.createElement("span");
      name.textContent = s.name;
      const detail = document.createElement("small");
      detail.textContent = s.detail;
      li.append(name, detail);
      // mousedown: before the box loses focus and closes the list.
      li.addEventListener("mousedown", (e) => { e.preventDefault(); choose(s); });
      return li;
    }));
    list.hidden = items.length === 0;
    box.setAttribute("aria-expanded", String(items.length > 0));
    highlight(-1);
  };
  const ask = async () => {
    const q = box.value.trim();
    if (!q) { items = []; render(); return; }
    const mine = ++asked;
    const url = `/lookup?kind=${encodeURIComponent(box.dataset.lookup)}&q=${encodeURIComponent(q)}`;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok || mine !== asked) return;
      items = await response.json();
      render();
    } catch (_) { /* offline: the typed name is looked up on save */ }
  };

  box.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(ask, 150);
  });
  box.addEventListener("keydown", (e) => {
    if (list.hidden) return;
    if (e.key === "ArrowDown") { e.preventDefault(); highlight(Math.min(active + 1, items.length - 1)); }
    else if (e.key === "ArrowUp") { e.preventDefault(); highlight(Math.max(active - 1, 0)); }
    else if (e.key === "Enter" && active >= 0) { e.preventDefault(); choose(items[active]); }
    else if (e.key === "Escape") close();
  });
  box.addEventListener("blur", close);
}
