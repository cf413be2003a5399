// FieldCRM office UI: small enhancements; every page works without them.
"use strict";
document.documentElement.classList.add("js");

document.addEventListener("DOMContentLoaded", () => {
  // Error pages: Back returns to where the user came from.
  for (const back of document.querySelectorAll("[data-back]")) {
    back.hidden = false;
    back.addEventListener("click", () => history.back());
  }

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
