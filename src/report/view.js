// The report page's script (runs in the browser; src/report/html.ts inlines it after ECharts and the data).
// One chart per (stage, chart family): every run's curves side by side, a smoothing slider (an exponential
// moving average, as TensorBoard's), raw points kept faint; a timeline of every run's stages; each chart exports
// as SVG or PNG. window.trainflowReport exposes the charts for tests.
/* global echarts */
(function () {
  'use strict';
  const data = JSON.parse(document.getElementById('report-data').textContent);
  const palette = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
  const charts = [];

  function smooth(points, weight) {
    let last = null;
    return points.map(([x, y]) => {
      last = last === null ? y : last * weight + (1 - weight) * y;
      return [x, last];
    });
  }

  /** families: [{title, metrics}] known in advance; every other curve gets a chart of its own. */
  function chartSpecs() {
    const specs = new Map();
    for (const run of data.runs) {
      for (const stage of run.stages) {
        const metrics = Object.keys(stage.curves).filter((m) => stage.curves[m].length > 0);
        const placed = new Set();
        for (const fam of data.families) {
          const present = fam.metrics.filter((m) => metrics.includes(m));
          if (present.length === 0) continue;
          present.forEach((m) => placed.add(m));
          addSeries(specs, stage.name, fam.title, run, stage, present);
        }
        for (const m of metrics.filter((m) => !placed.has(m)))
          addSeries(specs, stage.name, m, run, stage, [m]);
      }
    }
    return [...specs.values()];
  }

  function addSeries(specs, stageName, title, run, stage, metrics) {
    const key = `${stageName}\u0000${title}`;
    if (!specs.has(key)) specs.set(key, { id: key, stage: stageName, title, series: [] });
    metrics.forEach((m, k) => {
      const label = data.runs.length > 1 ? `${run.pipelineId} · ${m}` : m;
      // a family's second and third metric are dashed and dotted: equal curves (reward and pass rate under a
      // binary reward) stay two visible lines
      specs.get(key).series.push({ name: label, points: stage.curves[m], dash: ['solid', 'dashed', 'dotted'][k % 3] });
    });
  }

  function exportToolbox(fileBase, elementId) {
    return {
      right: 8,
      feature: {
        saveAsImage: { type: 'svg', name: fileBase, title: 'SVG' },
        myPng: {
          show: true,
          title: 'PNG',
          icon: 'path://M4,4H28V28H4Z M8,20L14,12L18,18L21,15L26,22H6Z',
          onclick: () => exportPng(echarts.getInstanceByDom(document.getElementById(elementId)), fileBase),
        },
      },
    };
  }

  /** SVG renderer → an image → a canvas → PNG, so both formats come from the same drawing. */
  function exportPng(chart, fileBase) {
    const svgUrl = chart.getDataURL({ type: 'svg' });
    const img = new Image();
    img.onload = () => {
      const canvas = document.createElement('canvas');
      canvas.width = img.width * 2;
      canvas.height = img.height * 2;
      const ctx = canvas.getContext('2d');
      ctx.fillStyle = '#fff';
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      const a = document.createElement('a');
      a.href = canvas.toDataURL('image/png');
      a.download = `${fileBase}.png`;
      a.click();
    };
    img.src = svgUrl;
  }

  function curveOption(spec, weight, elementId) {
    const series = [];
    spec.series.forEach((s, i) => {
      const color = palette[i % palette.length];
      series.push({
        name: s.name,
        type: 'line',
        data: smooth(s.points, weight),
        showSymbol: s.points.length < 40,
        lineStyle: { width: 2, color, type: s.dash },
        itemStyle: { color },
      });
      if (weight > 0)
        series.push({
          name: s.name,
          type: 'line',
          data: s.points,
          showSymbol: false,
          silent: true,
          lineStyle: { width: 1, color, opacity: 0.25 },
          itemStyle: { color },
          tooltip: { show: false },
        });
    });
    return {
      animation: false,
      title: { text: `${spec.stage}: ${spec.title}`, left: 8, textStyle: { fontSize: 14 } },
      tooltip: { trigger: 'axis' },
      legend: { top: 28, type: 'scroll' },
      grid: { left: 56, right: 24, top: 64, bottom: 40 },
      toolbox: exportToolbox(`${spec.stage}-${spec.title}`.replace(/[^A-Za-z0-9._-]+/g, '_'), elementId),
      xAxis: { type: 'value', name: 'step', nameLocation: 'middle', nameGap: 26, minInterval: 1 },
      yAxis: { type: 'value', scale: true },
      series,
    };
  }

  /** Stages as bars on a time axis, one row per (run, stage); the label says how many attempts it took. */
  function timelineOption() {
    const rows = [];
    const bars = [];
    for (const run of data.runs) {
      for (const s of run.stages) {
        if (!s.startedAt) continue;
        const end = s.completedAt ?? s.startedAt;
        const row = data.runs.length > 1 ? `${run.pipelineId} · ${s.name}` : s.name;
        rows.push(row);
        bars.push({
          name: row,
          value: [rows.length - 1, Date.parse(s.startedAt), Date.parse(end), s.attempt ?? 1, s.state],
          itemStyle: {
            color: s.state === 'completed' ? '#2ca02c' : s.state === 'failed' ? '#d62728' : '#1f77b4',
          },
        });
      }
    }
    const renderItem = (params, api) => {
      const y = api.value(0);
      const start = api.coord([api.value(1), y]);
      const end = api.coord([api.value(2), y]);
      const h = api.size([0, 1])[1] * 0.6;
      const attempts = api.value(3);
      return {
        type: 'group',
        children: [
          {
            type: 'rect',
            shape: { x: start[0], y: start[1] - h / 2, width: Math.max(2, end[0] - start[0]), height: h },
            style: api.style(),
          },
          {
            type: 'text',
            style: {
              x: end[0] + 4,
              y: start[1],
              text: attempts > 1 ? `${attempts} attempts` : '',
              verticalAlign: 'middle',
              fontSize: 11,
            },
          },
        ],
      };
    };
    return {
      animation: false,
      title: { text: 'stage timeline', left: 8, textStyle: { fontSize: 14 } },
      tooltip: {
        formatter: (p) => {
          const [, t0, t1, attempts, state] = p.value;
          const min = ((t1 - t0) / 60000).toFixed(1);
          return `${p.name}<br>${state}, ${min} min, attempt${attempts > 1 ? 's' : ''}: ${attempts}`;
        },
      },
      grid: { left: 160, right: 80, top: 40, bottom: 40 },
      toolbox: exportToolbox('timeline', 'timeline'),
      xAxis: { type: 'time' },
      yAxis: { type: 'category', data: rows, inverse: true },
      series: [{ type: 'custom', renderItem, encode: { x: [1, 2], y: 0 }, data: bars }],
    };
  }

  function mount(id, option, height) {
    const el = document.createElement('div');
    el.className = 'chart';
    el.id = id;
    el.style.height = `${height}px`;
    document.getElementById('charts').appendChild(el);
    const chart = echarts.init(el, null, { renderer: 'svg' });
    chart.setOption(option);
    return chart;
  }

  const timeline = timelineOption();
  if (timeline.series[0].data.length > 0) {
    charts.push({
      id: 'timeline',
      kind: 'timeline',
      chart: mount('timeline', timeline, 80 + 28 * timeline.yAxis.data.length),
    });
  }
  const specs = chartSpecs();
  specs.forEach((spec, i) => {
    const weight = Number(document.getElementById('smoothing').value);
    charts.push({
      id: `chart-${i}`,
      kind: 'curve',
      spec,
      chart: mount(`chart-${i}`, curveOption(spec, weight, `chart-${i}`), 300),
    });
  });
  document.getElementById('smoothing').addEventListener('input', (e) => {
    const weight = Number(e.target.value);
    document.getElementById('smoothing-value').textContent = weight.toFixed(2);
    for (const c of charts)
      if (c.kind === 'curve') c.chart.setOption(curveOption(c.spec, weight, c.id), true);
  });

  window.trainflowReport = {
    charts: charts.map((c) => ({
      id: c.id,
      kind: c.kind,
      title: c.kind === 'curve' ? `${c.spec.stage}: ${c.spec.title}` : 'stage timeline',
      series: c.chart.getOption().series.map((s) => ({ name: s.name, points: s.data.length })),
      svg: () => c.chart.getDataURL({ type: 'svg' }),
    })),
  };
})();
