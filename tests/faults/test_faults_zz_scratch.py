import time, os, asyncio
from service.testing.faults import CheckoutWorkload

async def test_baseline(kafka_bootstrap, mongodb_url, scene_factory, show):
    n = int(os.environ.get("N", "200"))
    async with scene_factory(kafka_bootstrap, mongodb_url) as scene:
        svc = scene.service()
        t0 = time.monotonic()
        await svc.start_ready()
        show(f"ready in {time.monotonic()-t0:.1f}s")
        wl = CheckoutWorkload(kafka_bootstrap, scene.harness.prefix, scene.harness.received, carts=n)
        await wl.start()
        t0 = time.monotonic()
        await wl.publish_carts()
        show(f"published in {time.monotonic()-t0:.1f}s {wl.progress()}")
        for i in range(int(os.environ.get("T", "60"))):
            await asyncio.sleep(1)
            await wl.react()
            if i % 5 == 0:
                show(f"{i}s {wl.progress()} task={scene.harness._observer_task}")
            if not wl.outstanding(): break
        show(f"done in {time.monotonic()-t0:.1f}s {wl.progress()}")
        await wl.stop()
        t1 = time.monotonic()
        r = await scene.audit(wait_s=10)
        show(r.render() + f" audit {time.monotonic()-t1:.1f}s")
        r.assert_clean()
