// i18n.js owns the overlay's words in each language it speaks. Numbers,
// prices and times are not here: format.js formats them with Intl for the
// locale, so "{n}" arrives already formatted ("1 200" in nb, "1,200" in en).

const STRINGS = {
  en: {
    left: "{n} left",
    low: "Only {n} left!",
    soldOut: "SOLD OUT",
    back: "Back in stock!",
    carts: "All in carts",
    mayComeBack: "may come back",
    opensIn: "Opens in {t}",
    announceSoldOut: "{title}: sold out",
    announceBack: "{title}: back in stock, {n} left",
    opens: "Opens {time}",
    paused: "Paused",
    closed: "Sale closed",
    reconnecting: "Reconnecting…",
    unknown: "Product not found",
    setup: "Add ?sku=<id> or ?show=<id> to the address",
    buy: "Buy",
    buyLabel: "Buy {title}",
    reserving: "Reserving…",
    reservedFor: "Reserved for you — {t}",
    checkout: "Go to checkout",
    bought: "Bought — thank you!",
    released: "Reservation released",
    expired: "Reservation ended — back on sale",
    refSoldOut: "Sold out",
    refLimit: "Limit reached",
    refNotOpen: "Not open yet",
    refSession: "Session expired — refresh",
    refOther: "Could not reserve — try again",
    announceReserved: "Reserved for you: {t} to check out",
    announceLeft: "{t} left to check out",
  },
  nb: {
    left: "{n} igjen",
    low: "Bare {n} igjen!",
    soldOut: "UTSOLGT",
    back: "Tilbake på lager!",
    carts: "Alt i handlekurver",
    mayComeBack: "kan komme tilbake",
    opensIn: "Åpner om {t}",
    announceSoldOut: "{title}: utsolgt",
    announceBack: "{title}: tilbake på lager, {n} igjen",
    opens: "Åpner {time}",
    paused: "Pause",
    closed: "Salget er stengt",
    reconnecting: "Kobler til på nytt…",
    unknown: "Fant ikke produktet",
    setup: "Legg ?sku=<id> eller ?show=<id> til adressen",
    buy: "Kjøp",
    buyLabel: "Kjøp {title}",
    reserving: "Reserverer…",
    reservedFor: "Reservert til deg — {t}",
    checkout: "Gå til kassen",
    bought: "Kjøpt — takk!",
    released: "Reservasjonen er frigitt",
    expired: "Reservasjonen gikk ut — til salgs igjen",
    refSoldOut: "Utsolgt",
    refLimit: "Grensen er nådd",
    refNotOpen: "Ikke åpnet ennå",
    refSession: "Økten er utløpt — last inn på nytt",
    refOther: "Kunne ikke reservere — prøv igjen",
    announceReserved: "Reservert til deg: {t} til å betale",
    announceLeft: "{t} igjen til å betale",
  },
  sv: {
    left: "{n} kvar",
    low: "Bara {n} kvar!",
    soldOut: "SLUTSÅLD",
    back: "Åter i lager!",
    carts: "Allt i varukorgar",
    mayComeBack: "kan komma tillbaka",
    opensIn: "Öppnar om {t}",
    announceSoldOut: "{title}: slutsåld",
    announceBack: "{title}: åter i lager, {n} kvar",
    opens: "Öppnar {time}",
    paused: "Pausad",
    closed: "Försäljningen är stängd",
    reconnecting: "Återansluter…",
    unknown: "Produkten hittades inte",
    setup: "Lägg till ?sku=<id> eller ?show=<id> i adressen",
    buy: "Köp",
    buyLabel: "Köp {title}",
    reserving: "Reserverar…",
    reservedFor: "Reserverad åt dig — {t}",
    checkout: "Till kassan",
    bought: "Köpt — tack!",
    released: "Reservationen släpptes",
    expired: "Reservationen gick ut — till salu igen",
    refSoldOut: "Slutsåld",
    refLimit: "Gränsen är nådd",
    refNotOpen: "Inte öppen än",
    refSession: "Sessionen har gått ut — ladda om",
    refOther: "Kunde inte reservera — försök igen",
    announceReserved: "Reserverad åt dig: {t} att betala",
    announceLeft: "{t} kvar att betala",
  },
  da: {
    left: "{n} tilbage",
    low: "Kun {n} tilbage!",
    soldOut: "UDSOLGT",
    back: "På lager igen!",
    carts: "Alt ligger i kurve",
    mayComeBack: "kan komme tilbage",
    opensIn: "Åbner om {t}",
    announceSoldOut: "{title}: udsolgt",
    announceBack: "{title}: på lager igen, {n} tilbage",
    opens: "Åbner {time}",
    paused: "Pause",
    closed: "Salget er lukket",
    reconnecting: "Forbinder igen…",
    unknown: "Produktet blev ikke fundet",
    setup: "Tilføj ?sku=<id> eller ?show=<id> til adressen",
    buy: "Køb",
    buyLabel: "Køb {title}",
    reserving: "Reserverer…",
    reservedFor: "Reserveret til dig — {t}",
    checkout: "Gå til kassen",
    bought: "Købt — tak!",
    released: "Reservationen er frigivet",
    expired: "Reservationen udløb — til salg igen",
    refSoldOut: "Udsolgt",
    refLimit: "Grænsen er nået",
    refNotOpen: "Ikke åbnet endnu",
    refSession: "Sessionen er udløbet — genindlæs",
    refOther: "Kunne ikke reservere — prøv igen",
    announceReserved: "Reserveret til dig: {t} til at betale",
    announceLeft: "{t} tilbage til at betale",
  },
  de: {
    left: "Noch {n} Stück",
    low: "Nur noch {n} Stück!",
    soldOut: "AUSVERKAUFT",
    back: "Wieder da!",
    carts: "Alles in Warenkörben",
    mayComeBack: "kann wiederkommen",
    opensIn: "Startet in {t}",
    announceSoldOut: "{title}: ausverkauft",
    announceBack: "{title}: wieder da, noch {n} Stück",
    opens: "Ab {time}",
    paused: "Pausiert",
    closed: "Verkauf beendet",
    reconnecting: "Verbinde neu…",
    unknown: "Produkt nicht gefunden",
    setup: "?sku=<id> oder ?show=<id> an die Adresse anhängen",
    buy: "Kaufen",
    buyLabel: "{title} kaufen",
    reserving: "Wird reserviert…",
    reservedFor: "Für dich reserviert — {t}",
    checkout: "Zur Kasse",
    bought: "Gekauft — danke!",
    released: "Reservierung aufgehoben",
    expired: "Reservierung abgelaufen — wieder im Verkauf",
    refSoldOut: "Ausverkauft",
    refLimit: "Limit erreicht",
    refNotOpen: "Noch nicht geöffnet",
    refSession: "Sitzung abgelaufen — neu laden",
    refOther: "Reservierung fehlgeschlagen — erneut versuchen",
    announceReserved: "Für dich reserviert: {t} zum Bezahlen",
    announceLeft: "Noch {t} zum Bezahlen",
  },
};

/** Norwegian comes as nb (Bokmål), no (Norwegian) or nn (Nynorsk, which
 * reads Bokmål well enough for these few words). */
const ALIASES = { no: "nb", nn: "nb" };

/** Languages with their own strings. */
export const LANGUAGES = Object.keys(STRINGS);

/**
 * Resolves a `?lang=` value to {locale, strings, lang}: `locale` is the
 * canonical BCP 47 tag for Intl (kept even when we have no strings for the
 * language, so numbers still follow it), `strings` falls back to English.
 */
export function resolve(tag) {
  let locale = "en";
  try {
    if (tag) locale = Intl.getCanonicalLocales(tag)[0];
  } catch {
    locale = "en";
  }
  const primary = locale.split("-")[0].toLowerCase();
  const lang = ALIASES[primary] || primary;
  const strings = STRINGS[lang] || STRINGS.en;
  if (lang === "nb" && primary === "no") locale = locale.replace(/^no/, "nb");
  return { locale, lang: STRINGS[lang] ? lang : "en", strings };
}

/** Fills `{name}` placeholders. */
export function fill(template, values) {
  return template.replace(/\{(\w+)\}/g, (_, k) => (k in values ? values[k] : ""));
}
