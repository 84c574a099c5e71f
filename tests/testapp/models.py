"""Models used by the test suite."""

from __future__ import annotations

import uuid

from django.db import models


class Customer(models.Model):
    name = models.CharField(max_length=100)


class Order(models.Model):
    """Every kind of value the default publish-on-save data must make JSON-safe."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders", null=True)
    ref = models.UUIDField(default=uuid.uuid4)
    total = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    placed_on = models.DateField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=20, default="new")
    extra = models.JSONField(default=dict)
    attachment = models.FileField(blank=True)
    blob = models.BinaryField(null=True)
