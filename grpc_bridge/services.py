"""The Machine, Io and Recipes servicers: reads come from the shared sample, commands go to the rings.

Each command method only validates and picks the ring command; CommandGateway does the rest.
"""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import grpc

from common.config import EvoConfig
from common.recipes import MachineLimits, list_recipes
from common.shm.commands import CuCommand, HalCommand, ReCommand

from .commands import CommandGateway, RingCommand
from .convert import StatusBuilder
from .protos.evo.v1 import (
    io_pb2,
    io_pb2_grpc,
    machine_pb2,
    machine_pb2_grpc,
    recipes_pb2,
    recipes_pb2_grpc,
)
from .shm_link import CU, HAL, RE, Snapshot
from .status_map import invalid
from .validation import Validator
from .watch import Broadcast, Streamer

log = logging.getLogger(__name__)
FIRST_SAMPLE_WAIT_S = 1.0


async def latest(broadcast: Broadcast, context: grpc.aio.ServicerContext) -> Snapshot:
    """A snapshot no older than one sample period (read now when nobody watches)."""
    snap = broadcast.current()
    if snap is None:
        try:
            snap = await asyncio.wait_for(broadcast.wait_newer(-1), FIRST_SAMPLE_WAIT_S)
        except asyncio.TimeoutError:
            pass
    if snap is None:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the bridge has not sampled the segments yet")
    return snap


class MachineService(machine_pb2_grpc.MachineServicer):
    def __init__(self, gateway: CommandGateway, validator: Validator, builder: StatusBuilder,
                 streamer: Streamer) -> None:
        self.gw = gateway
        self.v = validator
        self.b = builder
        self.streamer = streamer

    # -- reads ----------------------------------------------------------------------------------
    async def GetStatus(self, request, context):  # noqa: N802, ANN001, ANN201 - grpc API
        return (await latest(self.streamer.broadcast, context)).cached("machine", self.b.machine)

    async def WatchStatus(self, request, context) -> AsyncIterator[machine_pb2.MachineStatus]:  # noqa: N802, ANN001
        async for msg in self.streamer.stream(request.rate_hz, context, "machine", self.b.machine):
            yield msg

    # -- commands --------------------------------------------------------------------------------
    async def _axis_cmd(self, name: str, code: CuCommand, request, context, allow_all: bool = False):  # noqa: ANN001, ANN202
        def build() -> RingCommand:
            self.v.axis(request.axis, allow_all=allow_all)
            return RingCommand(CU, code, axis=request.axis)
        return await self.gw.run(f"Machine.{name}", request, context, build)

    async def EnableAxis(self, request, context):  # noqa: N802, ANN001, ANN201
        return await self._axis_cmd("EnableAxis", CuCommand.ENABLE_AXIS, request, context)

    async def DisableAxis(self, request, context):  # noqa: N802, ANN001, ANN201
        return await self._axis_cmd("DisableAxis", CuCommand.DISABLE_AXIS, request, context)

    async def StopAxis(self, request, context):  # noqa: N802, ANN001, ANN201
        return await self._axis_cmd("StopAxis", CuCommand.STOP, request, context, allow_all=True)

    async def Home(self, request, context):  # noqa: N802, ANN001, ANN201
        return await self._axis_cmd("Home", CuCommand.HOME, request, context)

    async def ResetFaults(self, request, context):  # noqa: N802, ANN001, ANN201
        return await self._axis_cmd("ResetFaults", CuCommand.RESET_ERROR, request, context, allow_all=True)

    async def Jog(self, request, context):  # noqa: N802, ANN001, ANN201
        def build() -> RingCommand:
            ax = self.v.axis(request.axis)
            d = request.direction
            if d == machine_pb2.JOG_DIRECTION_STOP:
                return RingCommand(CU, CuCommand.JOG_STOP, axis=ax.id)
            speed = self.v.velocity(ax, request.velocity)
            if d == machine_pb2.JOG_DIRECTION_POSITIVE:
                code = CuCommand.JOG_POSITIVE
            elif d == machine_pb2.JOG_DIRECTION_NEGATIVE:
                code = CuCommand.JOG_NEGATIVE
            else:
                raise invalid(f"direction {d} is not STOP=0, POSITIVE=1 or NEGATIVE=2")
            return RingCommand(CU, code, axis=ax.id, args=(speed,))
        return await self.gw.run("Machine.Jog", request, context, build)

    async def MoveTo(self, request, context):  # noqa: N802, ANN001, ANN201
        def build() -> RingCommand:
            ax = self.v.axis(request.axis)
            pos = self.v.position(ax, request.position)
            vel = self.v.velocity(ax, request.velocity)
            acc = self.v.acceleration(ax, request.acceleration)
            return RingCommand(CU, CuCommand.MOVE_ABSOLUTE, axis=ax.id, args=(pos, vel, acc))
        return await self.gw.run("Machine.MoveTo", request, context, build)

    async def SetMode(self, request, context):  # noqa: N802, ANN001, ANN201
        def build() -> RingCommand:
            ax = self.v.axis(request.axis)
            return RingCommand(CU, CuCommand.SET_MODE, axis=ax.id, pin=self.v.mode(request.mode))
        return await self.gw.run("Machine.SetMode", request, context, build)

    async def SetMachineState(self, request, context):  # noqa: N802, ANN001, ANN201
        def build() -> RingCommand:
            return RingCommand(CU, CuCommand.SET_MACHINE_STATE, pin=self.v.machine_state(request.state))
        return await self.gw.run("Machine.SetMachineState", request, context, build)

    async def AllowManualMode(self, request, context):  # noqa: N802, ANN001, ANN201
        return await self.gw.run("Machine.AllowManualMode", request, context, lambda: RingCommand(
            CU, CuCommand.ALLOW_MANUAL_MODE, args=(1.0 if request.allow else 0.0,)))

    async def AcquireAxis(self, request, context):  # noqa: N802, ANN001, ANN201
        return await self._axis_cmd("AcquireAxis", CuCommand.ACQUIRE_LOCK, request, context, allow_all=True)

    async def ReleaseAxis(self, request, context):  # noqa: N802, ANN001, ANN201
        return await self._axis_cmd("ReleaseAxis", CuCommand.RELEASE_LOCK, request, context, allow_all=True)

    async def EmergencyStop(self, request, context):  # noqa: N802, ANN001, ANN201
        return await self.gw.run("Machine.EmergencyStop", request, context,
                           lambda: RingCommand(CU, CuCommand.EMERGENCY_STOP))


class IoService(io_pb2_grpc.IoServicer):
    def __init__(self, gateway: CommandGateway, validator: Validator, builder: StatusBuilder,
                 streamer: Streamer) -> None:
        self.gw = gateway
        self.v = validator
        self.b = builder
        self.streamer = streamer

    async def GetIo(self, request, context):  # noqa: N802, ANN001, ANN201
        return (await latest(self.streamer.broadcast, context)).cached("io", self.b.io)

    async def WatchIo(self, request, context) -> AsyncIterator[io_pb2.IoStatus]:  # noqa: N802, ANN001
        async for msg in self.streamer.stream(request.rate_hz, context, "io", self.b.io):
            yield msg

    async def SetDigitalOutput(self, request, context):  # noqa: N802, ANN001, ANN201
        def build() -> RingCommand:
            self.v.digital_output(request.pin)
            return RingCommand(HAL, HalCommand.SET_DO, pin=request.pin, args=(1.0 if request.value else 0.0,))
        return await self.gw.run("Io.SetDigitalOutput", request, context, build)

    async def SetAnalogOutput(self, request, context):  # noqa: N802, ANN001, ANN201
        def build() -> RingCommand:
            value = self.v.analog_output(request.pin, request.value)
            return RingCommand(HAL, HalCommand.SET_AO, pin=request.pin, args=(value,))
        return await self.gw.run("Io.SetAnalogOutput", request, context, build)


class RecipesService(recipes_pb2_grpc.RecipesServicer):
    def __init__(self, gateway: CommandGateway, validator: Validator, builder: StatusBuilder,
                 streamer: Streamer, cfg: EvoConfig) -> None:
        self.gw = gateway
        self.v = validator
        self.b = builder
        self.streamer = streamer
        self.directory = cfg.recipes_dir()
        self.limits = MachineLimits.from_config(cfg)

    async def ListRecipes(self, request, context):  # noqa: N802, ANN001, ANN201
        infos = await asyncio.to_thread(list_recipes, self.directory, self.limits)  # file I/O off the loop
        return recipes_pb2.ListRecipesResponse(
            directory=str(self.directory),
            recipes=[
                recipes_pb2.RecipeInfo(name=r.name, description=r.description, step_count=r.steps,
                                       file=str(self.directory / f"{r.name}.toml"), valid=r.valid, error=r.error)
                for r in infos
            ],
        )

    async def GetRecipeStatus(self, request, context):  # noqa: N802, ANN001, ANN201
        return (await latest(self.streamer.broadcast, context)).cached("recipe", self.b.recipe)

    async def WatchRecipe(self, request, context) -> AsyncIterator[recipes_pb2.RecipeStatus]:  # noqa: N802, ANN001
        async for msg in self.streamer.stream(request.rate_hz, context, "recipe", self.b.recipe):
            yield msg

    async def _cmd(self, name: str, code: ReCommand, request, context, text: str = ""):  # noqa: ANN001, ANN202
        return await self.gw.run(f"Recipes.{name}", request, context, lambda: RingCommand(RE, code, text=text))

    async def LoadRecipe(self, request, context):  # noqa: N802, ANN001, ANN201
        def build() -> RingCommand:
            return RingCommand(RE, ReCommand.LOAD, text=self.v.recipe_name(request.name))
        return await self.gw.run("Recipes.LoadRecipe", request, context, build)

    async def StartRecipe(self, request, context):  # noqa: N802, ANN001, ANN201
        return await self._cmd("StartRecipe", ReCommand.START, request, context)

    async def PauseRecipe(self, request, context):  # noqa: N802, ANN001, ANN201
        return await self._cmd("PauseRecipe", ReCommand.PAUSE, request, context)

    async def ResumeRecipe(self, request, context):  # noqa: N802, ANN001, ANN201
        return await self._cmd("ResumeRecipe", ReCommand.RESUME, request, context)

    async def AbortRecipe(self, request, context):  # noqa: N802, ANN001, ANN201
        return await self._cmd("AbortRecipe", ReCommand.ABORT, request, context)

