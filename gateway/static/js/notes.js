// Notes come from the services in English (KPI notes from analytics, as fragments joined by "; "; the
// forecast's fallback reason and stock-position note). The dashboard says the fragments it knows in the
// chosen language; a fragment it does not know is shown as written, so a new note from a service is never
// hidden, only untranslated.
import { getLang } from "./i18n.js";

const PT = [
  [/^stock from a simulated ledger \(demo\), not real counts$/, () => "estoque de um razão simulado (demonstração), não de contagens reais"],
  [/^no stock counts in the read model for this slice$/, () => "sem contagens de estoque neste recorte"],
  [/^not computable on this slice$/, () => "não calculável neste recorte"],
  [/^no demand in the (\d+) days up to (\S+)$/, (m) => `sem demanda nos ${m[1]} dias até ${m[2]}`],
  [/^demand rate of the (\d+) days up to (\S+)$/, (m) => `taxa de demanda dos ${m[1]} dias até ${m[2]}`],
  [/^period (\S+) to (\S+)$/, (m) => `período de ${m[1]} a ${m[2]}`],
  [/^average inventory is zero or unknown$/, () => "estoque médio zero ou desconhecido"],
  [/^no site is marked critical \(criticality HIGH\) in the site master$/, () => "nenhum local está marcado como crítico (criticidade HIGH) no cadastro de locais"],
  [/^unit cost known for (\d+) of (\d+) material × site pairs(?: \(([\d.]+)% of the average quantity on hand\))?$/,
    (m) => `custo unitário conhecido para ${m[1]} de ${m[2]} pares material × local` + (m[3] ? ` (${m[3]}% da quantidade média em mãos)` : "")],
  [/^no unit cost for any material with stock counts in this slice \((\d+) material × site pairs?, unit_cost_brl not set in the material master\)$/,
    (m) => `sem custo unitário para nenhum material com contagens de estoque neste recorte (${m[1]} par(es) material × local, unit_cost_brl não informado no cadastro de materiais)`],
  [/^no demand with a stock count before it in this slice and period$/, () => "sem demanda precedida de contagem de estoque neste recorte e período"],
  [/^no materials with demand in this slice$/, () => "sem materiais com demanda neste recorte"],
  [/^classes derived from requisition lines \(80\/15\/5\), no spend data$/, () => "classes derivadas das linhas de requisição (80/15/5), sem dados de gasto"],
  [/^no purchased lines with a non-negative lead time in this slice$/, () => "sem linhas compradas com lead time não negativo neste recorte"],
  [/^(\d+) observations$/, (m) => `${m[1]} observações`],
  [/^fewer than two observations$/, () => "menos de duas observações"],
  [/^no received purchase orders with a promised date in this slice$/, () => "sem pedidos de compra recebidos com data prometida neste recorte"],
  [/^(\d+) orders$/, (m) => `${m[1]} pedidos`],
  [/^no past forecasts of weeks with complete actuals in this slice$/, () => "sem previsões passadas de semanas com demanda real completa neste recorte"],
  [/^no actual demand in the forecast weeks$/, () => "sem demanda real nas semanas previstas"],
  [/^(\d+) series-weeks$/, (m) => `${m[1]} séries-semanas`],
  [/^nominal (\S+)$/, (m) => `nominal ${m[1]}`],
  [/^forecasts carry fewer than two quantiles$/, () => "as previsões têm menos de dois quantis"],
  [/^mixed units: (.+)$/, (m) => `unidades diferentes: ${m[1]}`],
  // forecast-serving
  [/^no inventory row for this series: stock position taken as 0$/, () => "sem linha de estoque para esta série: posição tomada como 0"],
  [/^no inventory status in analytics: stock position taken as 0$/, () => "sem situação de estoque no analytics: posição tomada como 0"],
  [/^from analytics inventory status$/, () => "da situação de estoque do analytics"],
  [/^no demand recorded for this series$/, () => "nenhuma demanda registrada para esta série"],
  [/^history has (\d+) weeks, fewer than (\d+)$/, (m) => `histórico de ${m[1]} semanas, menos que ${m[2]}`],
  [/^family '(.*)' is unknown to (\S+) version (\S+)$/, (m) => `família '${m[1]}' desconhecida do ${m[2]} versão ${m[3]}`],
  [/^no version of model '(.*)' is loaded$/, (m) => `nenhuma versão do modelo '${m[1]}' carregada`],
];

function fragment(text) {
  for (const [pattern, say] of PT) {
    const match = pattern.exec(text);
    if (match) return say(match);
  }
  return text;
}

export function noteText(note) {
  if (!note || getLang() !== "pt-BR") return note;
  return note.split("; ").map(fragment).join("; ");
}
